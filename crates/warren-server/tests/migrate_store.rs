//! A data directory written before the message store (persistent messages
//! and queue indexes in sled) is moved into the message store at start-up:
//! the queue comes back with its messages and their sizes, sled holds none
//! of them afterwards, and a second start finds them in the message store.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use bytes::Bytes;
use warren_codec::{BasicProperties, FieldTable, ShortStr};
use warren_server::Config;
use warren_store::{Batch, QueueRecord, Store, StoredMessage};

fn open(config: &Config) -> (std::sync::Arc<warren_core::Broker>, u64) {
    let (broker, persister, thread) = warren_server::recovery::open(config).unwrap();
    let q = broker.vhost("/").unwrap().queue(b"legacy").unwrap();
    let bytes = q.stats().ready_bytes;
    persister.close();
    thread.join().unwrap();
    (broker, bytes)
}

#[test]
fn messages_stored_in_sled_move_to_the_message_store_at_start_up() {
    let tmp = tempfile::Builder::new()
        .prefix("warren-migrate-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    {
        let store = Store::open(&dir).unwrap();
        let mut b = Batch::default();
        b.put_queue(&QueueRecord {
            id: 7,
            vhost: "/".into(),
            name: ShortStr::from_static("legacy"),
            auto_delete: false,
            arguments: FieldTable::new(),
        });
        for id in 1..=3u64 {
            b.put_message(
                id,
                &StoredMessage {
                    exchange: ShortStr::empty(),
                    routing_key: ShortStr::from_static("legacy"),
                    properties: BasicProperties::default(),
                    body: Bytes::from(vec![id as u8; 100 * id as usize]),
                },
            );
            b.enqueue(7, id, id);
        }
        b.mark_delivered(7, 1, 1);
        store.apply(b).unwrap();
        store.flush().unwrap();
    }
    let config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    let (broker, bytes) = open(&config);
    let q = broker.vhost("/").unwrap().queue(b"legacy").unwrap();
    assert_eq!(q.message_count(), 3);
    // 100 + 200 + 300 body bytes, known without reading a body.
    assert_eq!(bytes, 600);
    drop(q);
    drop(broker);
    assert_eq!(Store::open(&dir).unwrap().message_count().unwrap(), 0);
    // A second start finds them in the message store.
    let (broker, bytes) = open(&config);
    assert_eq!(
        broker
            .vhost("/")
            .unwrap()
            .queue(b"legacy")
            .unwrap()
            .message_count(),
        3
    );
    assert_eq!(bytes, 600);
}
