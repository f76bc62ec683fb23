//! `POST /api/queues/{vhost}/{name}/move`: moves messages from one queue
//! to another in the same vhost, for the web UI's "Move messages".
//!
//! RabbitMQ's UI does this with a dynamic shovel; Warren has no shovels,
//! so this is Warren's own endpoint (RabbitMQ has no such path). It runs
//! inside the broker, one message at a time: take the head of the source
//! (as `basic.get` with ack), put it on the destination, and only then
//! acknowledge it at the source. A message is never lost on the way: if
//! the destination refuses it (gone, full with `reject-publish`) it goes
//! back to the source and the move stops. A persistent message on durable
//! queues is stored at the destination before it is removed from the
//! source, so a crash in between keeps it twice, never zero times.
//!
//! The message goes to the destination queue alone, as a publish to the
//! default exchange with the queue's name as routing key (RabbitMQ's
//! move shovel does that), but without routing by `CC` headers: its
//! properties and body are kept.
//!
//! Body `{"destination": "q2", "count": 100}` (count defaults to all the
//! ready messages, at most 100,000 per request); reply `{"moved": N}`.
//! The caller needs read permission on the source queue and write
//! permission on the default exchange, as for a `basic.get` and a publish.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use warren_codec::ShortStr;
use warren_core::message::Message;
use warren_core::permissions::{Access, Grant, Resource};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::{int, text};
use crate::topology::HTTP_CONN;
use crate::{Shared, body_json};

/// Most messages one request moves.
const MAX_MOVE: i64 = 100_000;

pub(crate) fn routes() -> Router<Shared> {
    Router::new().route("/api/queues/{vhost}/{name}/move", post(move_messages))
}

async fn move_messages(
    State(m): State<Shared>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let vh = caller.vhost(&m, &vhost)?;
    let source = vh.queue(name.as_bytes()).ok_or_else(ApiError::not_found)?;
    let body = body_json(&body)?;
    let destination = text(&body, "destination")?
        .ok_or_else(|| ApiError::bad_request("[{key_missing,destination}]"))?;
    if destination.as_bytes() == source.name().as_bytes() {
        return Err(ApiError::bad_request(
            "source and destination are the same queue",
        ));
    }
    let count = match int(&body, "count")? {
        Some(n) if n < 1 => return Err(ApiError::bad_request("count must be at least 1")),
        Some(n) => n.min(MAX_MOVE),
        None => MAX_MOVE,
    };
    let perms = m
        .broker
        .permissions(caller.name(), &vh.name)
        .ok_or_else(|| ApiError::not_authorised("Access refused."))?;
    let grant = Grant {
        user: caller.name(),
        vhost: &vh.name,
        perms: &perms,
    };
    grant
        .check(Access::Read, Resource::Queue, source.name().as_bytes())
        .and_then(|()| grant.check(Access::Write, Resource::Exchange, b""))
        .map_err(|_| ApiError::not_authorised("Access refused."))?;
    let target = vh.queue(destination.as_bytes()).ok_or_else(|| {
        ApiError::not_found_because(format!(
            "no destination queue '{destination}' in vhost '{}'",
            vh.name
        ))
    })?;
    let source = vh.queue_for(HTTP_CONN, source.name())?;
    let dest_name = ShortStr::from(destination);
    let mut moved: u64 = 0;
    // Bounded by `count` and by what the source holds.
    for _ in 0..count {
        let now = Instant::now();
        let (got, dead) = source.get(now, Some((HTTP_CONN, 0)));
        vh.dead_letter(&source, dead);
        let Some((taken, _left)) = got else { break };
        let original = &taken.message;
        let copy = Message::new(
            ShortStr::empty(),
            dest_name.clone(),
            original.properties.clone(),
            original.body.clone(),
        );
        let copy = vh.prepare(copy, std::slice::from_ref(&target));
        if !vh.enqueue(copy, std::slice::from_ref(&target), now, None) {
            // Refused (deleted meanwhile, or full with reject-publish):
            // back where it was, unchanged, and stop.
            let dead = source.settle(HTTP_CONN, 0, None, 0, [taken]);
            vh.dead_letter(&source, dead);
            break;
        }
        let dead = source.ack(HTTP_CONN, 0, None, vec![taken]);
        vh.dead_letter(&source, dead);
        moved += 1;
    }
    Ok(Json(json!({ "moved": moved })))
}
