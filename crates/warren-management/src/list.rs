//! What RabbitMQ's list endpoints do with their query string: sort
//! (`sort`, `sort_reverse`, default by vhost then name), paginate (`page`,
//! `page_size` up to 500, `name` and `use_regex` filters, only when
//! paginating) and keep only `columns` (dotted paths reach into objects).

use std::cmp::Ordering;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The list parameters of a query string (others are ignored).
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Page number, from 1; pagination is on only when given.
    pub page: Option<String>,
    /// Items per page (default 100, at most 500).
    pub page_size: Option<String>,
    /// Keep items whose name contains this (case-insensitive).
    pub name: Option<String>,
    /// `name` is a regular expression.
    pub use_regex: Option<String>,
    /// Comma-separated dotted paths to sort by; empty: no sort.
    pub sort: Option<String>,
    /// `true`: reverse the order.
    pub sort_reverse: Option<String>,
    /// Comma-separated dotted paths to keep.
    pub columns: Option<String>,
}

const MAX_PAGE_SIZE: i64 = 500;

fn path<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// Keeps only `columns` of an item.
pub(crate) fn project(item: &Value, columns: &[&str]) -> Value {
    let mut out = Map::new();
    for c in columns {
        let Some(v) = path(item, c) else { continue };
        let mut parts = c.split('.').peekable();
        let mut at = &mut out;
        while let Some(k) = parts.next() {
            if parts.peek().is_none() {
                at.insert(k.to_string(), v.clone());
                break;
            }
            let entry = at
                .entry(k.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(m) = entry else { break };
            at = m;
        }
    }
    Value::Object(out)
}

/// The sort keys a query asks for (`default` when it names none).
fn sort_keys<'a>(q: &'a ListQuery, default: &[&'a str]) -> Vec<&'a str> {
    match q.sort.as_deref() {
        Some("") => Vec::new(),
        Some(s) => s.split(',').map(str::trim).collect(),
        None => default.to_vec(),
    }
}

/// The page and page size asked for, if any, checked as RabbitMQ checks
/// them.
fn page_params(q: &ListQuery) -> Result<Option<(i64, i64)>, ApiError> {
    let Some(page) = q.page.as_deref() else {
        return Ok(None);
    };
    let invalid = || ApiError::bad_request("Pagination parameters are invalid");
    let page: i64 = page.trim().parse().map_err(|_| invalid())?;
    let page_size: i64 = match q.page_size.as_deref() {
        Some(s) => s.trim().parse().map_err(|_| invalid())?,
        None => 100,
    };
    if page <= 0 || page_size <= 0 || page_size > MAX_PAGE_SIZE {
        return Err(ApiError {
            error: Some("invalid_pagination_parameters"),
            ..ApiError::bad_request(format!(
                "Invalid pagination parameters: page number {page}, page size {page_size}"
            ))
        });
    }
    Ok(Some((page, page_size)))
}

/// Whether a name passes the query's filter.
type NameFilter = Box<dyn Fn(&str) -> bool>;

/// A name filter (`name`, `use_regex`), when paginating.
fn name_filter(q: &ListQuery) -> Result<Option<NameFilter>, ApiError> {
    let Some(name) = q.name.as_deref().filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if q.use_regex.as_deref() == Some("true") {
        let re = regex::RegexBuilder::new(name)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| ApiError::bad_request(format!("invalid regex: {e}")))?;
        Ok(Some(Box::new(move |n: &str| re.is_match(n))))
    } else {
        let needle = name.to_lowercase();
        Ok(Some(Box::new(move |n: &str| {
            n.to_lowercase().contains(&needle)
        })))
    }
}

/// The start of page `page` of `filtered` items, or RabbitMQ's 400.
fn page_start(page: i64, page_size: i64, filtered: usize) -> Result<usize, ApiError> {
    let size = usize::try_from(page_size).unwrap_or(100);
    let start = usize::try_from(page - 1)
        .unwrap_or(usize::MAX)
        .saturating_mul(size);
    if start > 0 && start >= filtered {
        return Err(ApiError {
            error: Some("page_out_of_range"),
            ..ApiError::bad_request(format!(
                "Page out of range, page: {page} page size: {page_size}, len: {filtered}"
            ))
        });
    }
    Ok(start)
}

fn columns(q: &ListQuery) -> Option<Vec<&str>> {
    q.columns
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| c.split(',').map(str::trim).collect())
}

fn project_all(items: Vec<Value>, cols: Option<&[&str]>) -> Vec<Value> {
    match cols {
        Some(cols) => items.iter().map(|i| project(i, cols)).collect(),
        None => items,
    }
}

fn envelope(
    total: usize,
    filtered: usize,
    page: i64,
    page_size: i64,
    items: Vec<Value>,
) -> Response {
    let size = usize::try_from(page_size).unwrap_or(100);
    Json(json!({
        "total_count": total,
        "item_count": items.len(),
        "filtered_count": filtered,
        "page": page,
        "page_size": page_size,
        "page_count": filtered.div_ceil(size),
        "items": items,
    }))
    .into_response()
}

/// Sorts, filters, paginates and projects `items`; the JSON response.
pub fn respond(
    mut items: Vec<Value>,
    q: &ListQuery,
    default_sort: &[&str],
) -> Result<Response, ApiError> {
    let keys = sort_keys(q, default_sort);
    if !keys.is_empty() {
        items.sort_by(|a, b| {
            keys.iter()
                .map(|k| compare(path(a, k), path(b, k)))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
    }
    if q.sort_reverse.as_deref() == Some("true") {
        items.reverse();
    }
    let cols = columns(q);
    let Some((page, page_size)) = page_params(q)? else {
        return Ok(Json(project_all(items, cols.as_deref())).into_response());
    };
    let total = items.len();
    if let Some(keep) = name_filter(q)? {
        items.retain(|i| i.get("name").and_then(Value::as_str).is_some_and(&keep));
    }
    let filtered = items.len();
    let start = page_start(page, page_size, filtered)?;
    let size = usize::try_from(page_size).unwrap_or(100);
    let page_items: Vec<Value> = items.into_iter().skip(start).take(size).collect();
    Ok(envelope(
        total,
        filtered,
        page,
        page_size,
        project_all(page_items, cols.as_deref()),
    ))
}

/// [`respond`] for long lists whose items are costly to render: when a
/// page is asked for in vhost/name order (the default), the page is chosen
/// from `(vhost, name)` alone and only its items are rendered; any other
/// order renders everything first.
pub fn respond_lazy<T>(
    items: Vec<T>,
    q: &ListQuery,
    default_sort: &[&str],
    key: impl Fn(&T) -> (&str, &str),
    render: impl Fn(&T) -> Value,
) -> Result<Response, ApiError> {
    let keys = sort_keys(q, default_sort);
    let cheap = keys.iter().all(|k| *k == "vhost" || *k == "name");
    let Some((page, page_size)) = page_params(q)?.filter(|_| cheap) else {
        return respond(items.iter().map(render).collect(), q, default_sort);
    };
    let mut items = items;
    items.sort_by(|a, b| {
        let (va, na) = key(a);
        let (vb, nb) = key(b);
        keys.iter()
            .map(|k| {
                if *k == "vhost" {
                    va.cmp(vb)
                } else {
                    na.cmp(nb)
                }
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
    if q.sort_reverse.as_deref() == Some("true") {
        items.reverse();
    }
    let total = items.len();
    if let Some(keep) = name_filter(q)? {
        items.retain(|i| keep(key(i).1));
    }
    let filtered = items.len();
    let start = page_start(page, page_size, filtered)?;
    let size = usize::try_from(page_size).unwrap_or(100);
    let page_items: Vec<Value> = items.iter().skip(start).take(size).map(render).collect();
    let cols = columns(q);
    Ok(envelope(
        total,
        filtered,
        page,
        page_size,
        project_all(page_items, cols.as_deref()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_keep_nested_keys() {
        let item =
            json!({"name": "q", "arguments": {"x-message-ttl": 5, "x-other": 1}, "vhost": "/"});
        assert_eq!(
            project(&item, &["name", "arguments.x-message-ttl"]),
            json!({"name": "q", "arguments": {"x-message-ttl": 5}})
        );
    }

    #[test]
    fn missing_values_sort_first() {
        let a = json!({"n": 1});
        let b = json!({});
        assert_eq!(compare(path(&a, "n"), path(&b, "n")), Ordering::Greater);
    }
}
