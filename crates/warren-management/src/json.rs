//! AMQP field tables and properties as JSON, both ways, as RabbitMQ's
//! management plugin converts them: integers become signed 64-bit
//! (`l`), floats doubles, strings long strings, lists arrays, objects
//! tables; `null` is refused inside arguments.

use serde_json::{Map, Value};
use warren_codec::{BasicProperties, FieldTable, FieldValue, LongStr, ShortStr};

use crate::error::ApiError;

/// A field table as a JSON object.
pub fn table_to_json(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in &t.0 {
        m.insert(k.to_lossy().into_owned(), value_to_json(v));
    }
    Value::Object(m)
}

/// A field value as JSON.
pub fn value_to_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::I8(n) => (*n).into(),
        FieldValue::U8(n) => (*n).into(),
        FieldValue::I16(n) => (*n).into(),
        FieldValue::U16(n) => (*n).into(),
        FieldValue::I32(n) => (*n).into(),
        FieldValue::U32(n) => (*n).into(),
        FieldValue::I64(n) => (*n).into(),
        FieldValue::F32(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        FieldValue::F64(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        FieldValue::Decimal(d) => {
            let scaled = f64::from(d.value) / 10f64.powi(i32::from(d.scale));
            serde_json::Number::from_f64(scaled).map_or(Value::Null, Value::Number)
        }
        FieldValue::LongStr(s) => Value::String(s.to_lossy().into_owned()),
        FieldValue::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        FieldValue::Array(a) => Value::Array(a.iter().map(value_to_json).collect()),
        FieldValue::Timestamp(t) => (*t).into(),
        FieldValue::Table(t) => table_to_json(t),
        FieldValue::Void => Value::Null,
    }
}

/// A JSON object (or `[]`, which some clients send for "none") as a field
/// table.
pub fn json_to_table(v: &Value) -> Result<FieldTable, ApiError> {
    match v {
        Value::Object(m) => {
            let mut t = FieldTable::new();
            for (k, v) in m {
                if k.len() > 255 {
                    return Err(ApiError::bad_request(format!(
                        "argument name too long: {k}"
                    )));
                }
                t.insert(ShortStr::from(k.as_str()), json_to_value(v)?);
            }
            Ok(t)
        }
        Value::Array(a) if a.is_empty() => Ok(FieldTable::new()),
        Value::Null => Ok(FieldTable::new()),
        _ => Err(ApiError::bad_request("arguments must be an object")),
    }
}

fn json_to_value(v: &Value) -> Result<FieldValue, ApiError> {
    Ok(match v {
        Value::Null => return Err(ApiError::bad_request("null_not_allowed")),
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::LongStr(LongStr::from(s.as_str())),
        Value::Array(a) => {
            FieldValue::Array(a.iter().map(json_to_value).collect::<Result<_, _>>()?)
        }
        Value::Object(_) => FieldValue::Table(json_to_table(v)?),
    })
}

/// A message's properties as RabbitMQ's API shows them: only those set.
pub fn properties_to_json(p: &BasicProperties) -> Value {
    let mut m = Map::new();
    let mut s = |k: &str, v: &Option<ShortStr>| {
        if let Some(v) = v {
            m.insert(k.to_string(), Value::String(v.to_lossy().into_owned()));
        }
    };
    s("content_type", &p.content_type);
    s("content_encoding", &p.content_encoding);
    s("correlation_id", &p.correlation_id);
    s("reply_to", &p.reply_to);
    s("expiration", &p.expiration);
    s("message_id", &p.message_id);
    s("type", &p.kind);
    s("user_id", &p.user_id);
    s("app_id", &p.app_id);
    s("cluster_id", &p.cluster_id);
    if let Some(h) = &p.headers {
        m.insert("headers".into(), table_to_json(h));
    }
    if let Some(d) = p.delivery_mode {
        m.insert("delivery_mode".into(), d.into());
    }
    if let Some(d) = p.priority {
        m.insert("priority".into(), d.into());
    }
    if let Some(t) = p.timestamp {
        m.insert("timestamp".into(), t.into());
    }
    Value::Object(m)
}

/// Properties given to `publish`: integers where RabbitMQ wants them,
/// strings otherwise, `headers` an object.
pub fn json_to_properties(v: &Value) -> Result<BasicProperties, ApiError> {
    let mut p = BasicProperties::default();
    let Some(m) = v.as_object() else {
        if v.is_null() || v.as_array().is_some_and(Vec::is_empty) {
            return Ok(p);
        }
        return Err(ApiError::bad_request("properties must be an object"));
    };
    for (k, v) in m {
        let text = || -> Result<Option<ShortStr>, ApiError> {
            match v {
                Value::String(s) if s.len() <= 255 => Ok(Some(ShortStr::from(s.as_str()))),
                _ => Err(ApiError::bad_request(format!("{k} must be a short string"))),
            }
        };
        let small = || -> Result<u8, ApiError> {
            v.as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| ApiError::bad_request(format!("{k} must be an integer")))
        };
        match k.as_str() {
            "content_type" => p.content_type = text()?,
            "content_encoding" => p.content_encoding = text()?,
            "correlation_id" => p.correlation_id = text()?,
            "reply_to" => p.reply_to = text()?,
            "expiration" => p.expiration = text()?,
            "message_id" => p.message_id = text()?,
            "type" => p.kind = text()?,
            "user_id" => p.user_id = text()?,
            "app_id" => p.app_id = text()?,
            "cluster_id" => p.cluster_id = text()?,
            "delivery_mode" => p.delivery_mode = Some(small()?),
            "priority" => p.priority = Some(small()?),
            "timestamp" => {
                p.timestamp = Some(v.as_u64().ok_or_else(|| {
                    ApiError::bad_request("timestamp must be an integer".to_string())
                })?);
            }
            "headers" => p.headers = Some(json_to_table(v)?),
            _ => {}
        }
    }
    Ok(p)
}

/// RabbitMQ's boolean fields may be JSON booleans or the strings
/// `"true"`/`"false"` (rabbitmqadmin sends strings).
pub fn flag(body: &Value, key: &str, default: bool) -> Result<bool, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!("not_boolean: {other}"))),
    }
}

/// An integer that may come as a number or a numeric string.
pub fn int(body: &Value, key: &str) -> Result<Option<i64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{key} must be an integer"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{key} must be an integer"))),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be an integer"))),
    }
}

/// A string field.
pub fn text<'a>(body: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
    }
}

/// Tags as a comma-separated string or a list, trimmed, empties dropped.
pub fn tags(v: &Value) -> Result<Vec<String>, ApiError> {
    let words: Vec<String> = match v {
        Value::String(s) => s.split(',').map(|t| t.trim().to_string()).collect(),
        Value::Array(a) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(|s| s.trim().to_string())
                    .ok_or_else(|| ApiError::bad_request("tags must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Value::Null => Vec::new(),
        _ => return Err(ApiError::bad_request("tags must be a string or a list")),
    };
    Ok(words.into_iter().filter(|t| !t.is_empty()).collect())
}
