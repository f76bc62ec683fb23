//! The code generator for `src/generated.rs`, run as a test.
//!
//! `cargo test -p warren-codec --test codegen` fails when the committed file
//! differs from what the spec JSON (`spec/amqp-rabbitmq-0.9.1.json`, a
//! byte-for-byte copy of RabbitMQ's codegen file) generates. Run it with
//! `WARREN_CODEGEN=write` to rewrite the file.
#![allow(
    clippy::unwrap_used,
    reason = "a generator over a fixed, trusted spec file"
)]

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bit,
    Octet,
    Short,
    Long,
    LongLong,
    ShortStr,
    LongStr,
    Timestamp,
    Table,
}

impl Ty {
    fn parse(s: &str) -> Ty {
        match s {
            "bit" => Ty::Bit,
            "octet" => Ty::Octet,
            "short" => Ty::Short,
            "long" => Ty::Long,
            "longlong" => Ty::LongLong,
            "shortstr" => Ty::ShortStr,
            "longstr" => Ty::LongStr,
            "timestamp" => Ty::Timestamp,
            "table" => Ty::Table,
            other => panic!("unknown primitive type {other}"),
        }
    }

    fn rust(self) -> &'static str {
        match self {
            Ty::Bit => "bool",
            Ty::Octet => "u8",
            Ty::Short => "u16",
            Ty::Long => "u32",
            Ty::LongLong | Ty::Timestamp => "u64",
            Ty::ShortStr => "ShortStr",
            Ty::LongStr => "LongStr",
            Ty::Table => "FieldTable",
        }
    }

    fn read(self) -> &'static str {
        match self {
            Ty::Bit => unreachable!("bits are packed"),
            Ty::Octet => "r.u8()?",
            Ty::Short => "r.u16()?",
            Ty::Long => "r.u32()?",
            Ty::LongLong | Ty::Timestamp => "r.u64()?",
            Ty::ShortStr => "r.shortstr()?",
            Ty::LongStr => "r.longstr()?",
            Ty::Table => "r.table()?",
        }
    }

    /// Reads a method argument: as [`Ty::read`], except that short strings
    /// must be UTF-8 (RabbitMQ refuses others with 501 FRAME_ERROR; content
    /// properties and table keys are not checked, as in RabbitMQ).
    fn read_arg(self) -> &'static str {
        match self {
            Ty::ShortStr => "r.shortstr_utf8()?",
            other => other.read(),
        }
    }

    fn write(self, expr: &str) -> String {
        match self {
            Ty::Bit => unreachable!("bits are packed"),
            Ty::Octet => format!("buf.put_u8({expr});"),
            Ty::Short => format!("buf.put_u16({expr});"),
            Ty::Long => format!("buf.put_u32({expr});"),
            Ty::LongLong | Ty::Timestamp => format!("buf.put_u64({expr});"),
            Ty::ShortStr => format!("put_shortstr(buf, &{expr});"),
            Ty::LongStr => format!("put_longstr(buf, &{expr});"),
            Ty::Table => format!("put_table(buf, &{expr});"),
        }
    }
}

struct Arg {
    field: String,
    wire: String,
    ty: Ty,
    default: Option<Value>,
}

struct MethodSpec {
    class_id: u16,
    method_id: u16,
    class: String,
    name: String,
    rust: String,
    synchronous: bool,
    content: bool,
    args: Vec<Arg>,
}

fn camel(s: &str) -> String {
    s.split('-')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn field_name(s: &str) -> String {
    let f = s.replace('-', "_");
    if f == "type" { "kind".to_string() } else { f }
}

fn default_expr(arg: &Arg) -> String {
    match (&arg.default, arg.ty) {
        (Some(Value::Bool(b)), Ty::Bit) => b.to_string(),
        (Some(Value::Number(n)), _) => n.to_string(),
        (Some(Value::String(s)), Ty::ShortStr) if !s.is_empty() => {
            format!("ShortStr::from_static({s:?})")
        }
        (Some(Value::String(s)), Ty::LongStr) if !s.is_empty() => {
            format!("LongStr(Bytes::from_static(b{s:?}))")
        }
        _ => "Default::default()".to_string(),
    }
}

fn generate(spec: &Value) -> String {
    let domains: std::collections::HashMap<String, String> = spec["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d[0].as_str().unwrap().to_string(),
                d[1].as_str().unwrap().to_string(),
            )
        })
        .collect();

    let mut methods = Vec::new();
    let mut props = Vec::new();
    for class in spec["classes"].as_array().unwrap() {
        let cname = class["name"].as_str().unwrap();
        let cid = class["id"].as_u64().unwrap() as u16;
        if cname == "basic" {
            for p in class["properties"].as_array().unwrap() {
                props.push(Arg {
                    field: field_name(p["name"].as_str().unwrap()),
                    wire: p["name"].as_str().unwrap().to_string(),
                    ty: Ty::parse(p["type"].as_str().unwrap()),
                    default: None,
                });
            }
        }
        for m in class["methods"].as_array().unwrap() {
            let mname = m["name"].as_str().unwrap();
            let args = m["arguments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    let ty = match a.get("type") {
                        Some(t) => t.as_str().unwrap().to_string(),
                        None => domains[a["domain"].as_str().unwrap()].clone(),
                    };
                    Arg {
                        field: field_name(a["name"].as_str().unwrap()),
                        wire: a["name"].as_str().unwrap().to_string(),
                        ty: Ty::parse(&ty),
                        default: a.get("default-value").cloned(),
                    }
                })
                .collect();
            methods.push(MethodSpec {
                class_id: cid,
                method_id: m["id"].as_u64().unwrap() as u16,
                class: cname.to_string(),
                name: mname.to_string(),
                rust: camel(cname) + &camel(mname),
                synchronous: m
                    .get("synchronous")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                content: m.get("content").and_then(Value::as_bool).unwrap_or(false),
                args,
            });
        }
    }

    let mut o = String::new();
    o.push_str("// @generated by crates/warren-codec/tests/codegen.rs from spec/amqp-rabbitmq-0.9.1.json.\n");
    o.push_str(
        "// Do not edit: run `WARREN_CODEGEN=write cargo test -p warren-codec --test codegen`.\n\n",
    );
    o.push_str("//! Every AMQP 0-9-1 method (with RabbitMQ's extensions), the basic\n");
    o.push_str("//! content properties, the spec's constants and its reply codes.\n\n");
    o.push_str("use bytes::{BufMut, Bytes, BytesMut};\n\n");
    o.push_str("use crate::error::{DecodeError, ErrorKind};\n");
    o.push_str("use crate::types::{FieldTable, LongStr, Reader, ShortStr, put_longstr, put_shortstr, put_table};\n\n");

    // Constants.
    let mut codes = Vec::new();
    for c in spec["constants"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let value = c["value"].as_u64().unwrap();
        if let Some(class) = c.get("class").and_then(Value::as_str) {
            codes.push((name.to_string(), value, class == "hard-error"));
        } else if name == "REPLY-SUCCESS" {
            codes.push((name.to_string(), value, false));
        } else {
            let ty = if value > 255 { "u32" } else { "u8" };
            writeln!(o, "/// Spec constant `{name}`.").unwrap();
            writeln!(o, "pub const {}: {ty} = {value};", name.replace('-', "_")).unwrap();
        }
    }
    o.push('\n');

    // Reply codes.
    o.push_str(
        "/// A reply code from the spec, with its soft (channel) or hard (connection) class.\n",
    );
    o.push_str(
        "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]\n#[repr(u16)]\npub enum ReplyCode {\n",
    );
    for (name, value, _) in &codes {
        writeln!(o, "    /// `{name}` ({value}).").unwrap();
        writeln!(o, "    {} = {value},", camel(&name.to_lowercase())).unwrap();
    }
    o.push_str("}\n\nimpl ReplyCode {\n");
    o.push_str("    /// The numeric code.\n    pub const fn code(self) -> u16 {\n        self as u16\n    }\n\n");
    o.push_str("    /// The constant's name as RabbitMQ prints it at the start of reply texts.\n");
    o.push_str("    pub const fn name(self) -> &'static str {\n        match self {\n");
    for (name, _, _) in &codes {
        writeln!(
            o,
            "            ReplyCode::{} => {:?},",
            camel(&name.to_lowercase()),
            name.replace('-', "_")
        )
        .unwrap();
    }
    o.push_str("        }\n    }\n\n");
    o.push_str("    /// Whether the spec classes this code as a hard (connection-level) error.\n");
    o.push_str("    pub const fn is_hard(self) -> bool {\n        matches!(self, ");
    let hard: Vec<String> = codes
        .iter()
        .filter(|c| c.2)
        .map(|c| format!("ReplyCode::{}", camel(&c.0.to_lowercase())))
        .collect();
    o.push_str(&hard.join(" | "));
    o.push_str(")\n    }\n\n");
    o.push_str("    /// The code for a number, if the spec defines it.\n");
    o.push_str(
        "    pub const fn from_code(code: u16) -> Option<ReplyCode> {\n        Some(match code {\n",
    );
    for (name, value, _) in &codes {
        writeln!(
            o,
            "            {value} => ReplyCode::{},",
            camel(&name.to_lowercase())
        )
        .unwrap();
    }
    o.push_str("            _ => return None,\n        })\n    }\n}\n\n");

    // Class ids.
    for class in spec["classes"].as_array().unwrap() {
        let cname = class["name"].as_str().unwrap();
        writeln!(o, "/// Class id of `{cname}`.").unwrap();
        writeln!(
            o,
            "pub const CLASS_{}: u16 = {};",
            cname.to_uppercase(),
            class["id"]
        )
        .unwrap();
    }
    o.push('\n');

    // Method structs.
    for m in &methods {
        writeln!(
            o,
            "/// `{}.{}` ({}, {}){}{}.",
            m.class,
            m.name,
            m.class_id,
            m.method_id,
            if m.synchronous { ", synchronous" } else { "" },
            if m.content { ", carries content" } else { "" }
        )
        .unwrap();
        // Credentials never reach logs: these get a redacting Debug.
        let secret = |a: &Arg| a.wire == "response" || a.wire == "new-secret";
        let redact = m.args.iter().any(secret);
        if redact {
            o.push_str("#[derive(Clone, PartialEq)]\n");
        } else {
            o.push_str("#[derive(Debug, Clone, PartialEq)]\n");
        }
        if m.args.is_empty() {
            writeln!(o, "pub struct {};\n", m.rust).unwrap();
        } else {
            writeln!(o, "pub struct {} {{", m.rust).unwrap();
            for a in &m.args {
                writeln!(o, "    /// `{}`.", a.wire).unwrap();
                writeln!(o, "    pub {}: {},", a.field, a.ty.rust()).unwrap();
            }
            o.push_str("}\n\n");
        }
        if redact {
            writeln!(o, "impl std::fmt::Debug for {} {{", m.rust).unwrap();
            o.push_str("    /// Prints every field but the credentials.\n");
            o.push_str(
                "    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {\n",
            );
            writeln!(o, "        f.debug_struct({:?})", m.rust).unwrap();
            for a in &m.args {
                if secret(a) {
                    writeln!(o, "            .field({:?}, &\"<redacted>\")", a.field).unwrap();
                } else {
                    writeln!(o, "            .field({:?}, &self.{})", a.field, a.field).unwrap();
                }
            }
            o.push_str("            .finish()\n    }\n}\n\n");
        }
        writeln!(o, "impl Default for {} {{", m.rust).unwrap();
        o.push_str("    /// The spec's default value for every argument that has one.\n");
        if m.args.is_empty() {
            writeln!(
                o,
                "    fn default() -> Self {{\n        {}\n    }}\n}}\n",
                m.rust
            )
            .unwrap();
        } else {
            writeln!(o, "    fn default() -> Self {{\n        {} {{", m.rust).unwrap();
            for a in &m.args {
                writeln!(o, "            {}: {},", a.field, default_expr(a)).unwrap();
            }
            o.push_str("        }\n    }\n}\n\n");
        }
        writeln!(o, "impl {} {{", m.rust).unwrap();
        writeln!(
            o,
            "    /// Class id.\n    pub const CLASS_ID: u16 = {};",
            m.class_id
        )
        .unwrap();
        writeln!(
            o,
            "    /// Method id.\n    pub const METHOD_ID: u16 = {};\n",
            m.method_id
        )
        .unwrap();
        // decode
        let uses_reader = !m.args.is_empty();
        writeln!(
            o,
            "    fn decode_args({}r: &mut Reader<'_>) -> Result<Self, DecodeError> {{",
            if uses_reader { "" } else { "_" }
        )
        .unwrap();
        let mut i = 0;
        while i < m.args.len() {
            if m.args[i].ty == Ty::Bit {
                o.push_str("        let bits = r.u8()?;\n");
                let mut bit = 0;
                while i < m.args.len() && m.args[i].ty == Ty::Bit && bit < 8 {
                    let mask = if bit == 0 {
                        "1".to_string()
                    } else {
                        format!("(1 << {bit})")
                    };
                    writeln!(o, "        let {} = bits & {mask} != 0;", m.args[i].field).unwrap();
                    bit += 1;
                    i += 1;
                }
            } else {
                writeln!(
                    o,
                    "        let {} = {};",
                    m.args[i].field,
                    m.args[i].ty.read_arg()
                )
                .unwrap();
                i += 1;
            }
        }
        if m.args.is_empty() {
            writeln!(o, "        Ok({})", m.rust).unwrap();
        } else {
            let fields: Vec<&str> = m.args.iter().map(|a| a.field.as_str()).collect();
            writeln!(o, "        Ok({} {{ {} }})", m.rust, fields.join(", ")).unwrap();
        }
        o.push_str("    }\n\n");
        // encode
        writeln!(
            o,
            "    fn encode_args(&self, {}buf: &mut BytesMut) {{",
            if uses_reader { "" } else { "_" }
        )
        .unwrap();
        let mut i = 0;
        while i < m.args.len() {
            if m.args[i].ty == Ty::Bit {
                let mut parts = Vec::new();
                let mut bit = 0;
                while i < m.args.len() && m.args[i].ty == Ty::Bit && bit < 8 {
                    if bit == 0 {
                        parts.push(format!("u8::from(self.{})", m.args[i].field));
                    } else {
                        parts.push(format!("(u8::from(self.{}) << {bit})", m.args[i].field));
                    }
                    bit += 1;
                    i += 1;
                }
                writeln!(o, "        buf.put_u8({});", parts.join(" | ")).unwrap();
            } else {
                let a = &m.args[i];
                let expr = match a.ty {
                    Ty::ShortStr | Ty::LongStr | Ty::Table => format!("self.{}", a.field),
                    _ => format!("self.{}", a.field),
                };
                writeln!(o, "        {}", a.ty.write(&expr)).unwrap();
                i += 1;
            }
        }
        o.push_str("    }\n}\n\n");
        writeln!(
            o,
            "impl From<{0}> for Method {{\n    fn from(m: {0}) -> Method {{\n        Method::{0}(m)\n    }}\n}}\n",
            m.rust
        )
        .unwrap();
    }

    // Method id list.
    o.push_str("/// Every (class id, method id) pair in the spec, in spec order.\n");
    o.push_str("pub const ALL_METHOD_IDS: &[(u16, u16)] = &[\n");
    for m in &methods {
        writeln!(o, "    ({}, {}),", m.class_id, m.method_id).unwrap();
    }
    o.push_str("];\n\n");

    // Method enum.
    o.push_str("/// Any AMQP method.\n#[derive(Debug, Clone, PartialEq)]\npub enum Method {\n");
    for m in &methods {
        writeln!(
            o,
            "    /// `{}.{}`.\n    {}({}),",
            m.class, m.name, m.rust, m.rust
        )
        .unwrap();
    }
    o.push_str("}\n\nimpl Method {\n");
    o.push_str("    /// Decodes a method frame payload: class id, method id, arguments.\n");
    o.push_str("    /// All of `payload` must be consumed.\n");
    o.push_str("    pub fn decode(payload: &[u8]) -> Result<Method, DecodeError> {\n");
    o.push_str("        let mut r = Reader::new(payload);\n");
    o.push_str("        let class_id = r.u16()?;\n        let method_id = r.u16().map_err(|e| e.in_method(class_id, 0))?;\n");
    o.push_str("        let m = match (class_id, method_id) {\n");
    for m in &methods {
        writeln!(
            o,
            "            ({}, {}) => {}::decode_args(&mut r).map(Method::{}),",
            m.class_id, m.method_id, m.rust, m.rust
        )
        .unwrap();
    }
    o.push_str("            _ => Err(DecodeError::new(ErrorKind::UnknownMethod)),\n        };\n");
    o.push_str("        let m = m.and_then(|m| r.finish().map(|()| m));\n");
    o.push_str("        m.map_err(|e| e.in_method(class_id, method_id))\n    }\n\n");
    o.push_str("    /// Writes class id, method id and arguments.\n");
    o.push_str("    pub fn encode(&self, buf: &mut BytesMut) {\n        buf.put_u16(self.class_id());\n        buf.put_u16(self.method_id());\n        match self {\n");
    for m in &methods {
        writeln!(
            o,
            "            Method::{}(m) => m.encode_args(buf),",
            m.rust
        )
        .unwrap();
    }
    o.push_str("        }\n    }\n\n");
    for (fname, ret, doc, f) in [
        (
            "class_id",
            "u16",
            "The class id.",
            Box::new(|m: &MethodSpec| m.class_id.to_string()) as Box<dyn Fn(&MethodSpec) -> String>,
        ),
        (
            "method_id",
            "u16",
            "The method id.",
            Box::new(|m: &MethodSpec| m.method_id.to_string()),
        ),
        (
            "name",
            "&'static str",
            "The spec name, as `class.method`.",
            Box::new(|m: &MethodSpec| format!("{:?}", format!("{}.{}", m.class, m.name))),
        ),
        (
            "has_content",
            "bool",
            "Whether a content header and body follow this method.",
            Box::new(|m: &MethodSpec| m.content.to_string()),
        ),
        (
            "is_synchronous",
            "bool",
            "Whether the spec marks this method as expecting a reply.",
            Box::new(|m: &MethodSpec| m.synchronous.to_string()),
        ),
    ] {
        writeln!(
            o,
            "    /// {doc}\n    pub fn {fname}(&self) -> {ret} {{\n        match self {{"
        )
        .unwrap();
        for m in &methods {
            writeln!(o, "            Method::{}(_) => {},", m.rust, f(m)).unwrap();
        }
        o.push_str("        }\n    }\n\n");
    }
    o.push_str("}\n\n");

    // Basic properties.
    assert!(
        props.len() <= 15,
        "more properties than one flag word holds"
    );
    o.push_str("/// The content properties of class `basic`, in flag-bit order.\n");
    o.push_str("#[derive(Debug, Clone, Default, PartialEq)]\npub struct BasicProperties {\n");
    for p in &props {
        writeln!(
            o,
            "    /// `{}`.\n    pub {}: Option<{}>,",
            p.wire,
            p.field,
            p.ty.rust()
        )
        .unwrap();
    }
    o.push_str("}\n\nimpl BasicProperties {\n");
    let mask: u16 = props
        .iter()
        .enumerate()
        .fold(0, |acc, (i, _)| acc | (1 << (15 - i)));
    writeln!(o, "    /// Flag bits that name a property; the rest must be clear.\n    pub const KNOWN_FLAGS: u16 = {mask:#06x};\n").unwrap();
    o.push_str("    /// Reads property flags (with continuation words) and the properties they announce.\n");
    o.push_str("    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {\n");
    o.push_str("        let mut p = BasicProperties::default();\n        p.decode_into(r)?;\n        Ok(p)\n    }\n\n");
    o.push_str("    /// [`BasicProperties::decode`] into an existing (default) value, so a\n");
    o.push_str("    /// boxed header is filled in place rather than moved into its box.\n");
    o.push_str(
        "    pub fn decode_into(&mut self, r: &mut Reader<'_>) -> Result<(), DecodeError> {\n",
    );
    o.push_str("        let flags = r.u16()?;\n");
    o.push_str("        if flags & !(Self::KNOWN_FLAGS | 1) != 0 {\n            return Err(DecodeError::new(ErrorKind::BadPropertyFlags(flags)));\n        }\n");
    o.push_str("        // Continuation words may follow; basic defines no property past the\n        // first word, so any bit set in them is an error.\n");
    o.push_str("        let mut more = flags & 1 != 0;\n        while more {\n            let next = r.u16()?;\n            if next & !1 != 0 {\n                return Err(DecodeError::new(ErrorKind::BadPropertyFlags(next)));\n            }\n            more = next & 1 != 0;\n        }\n");
    for (i, p) in props.iter().enumerate() {
        writeln!(
            o,
            "        if flags & (1 << {}) != 0 {{\n            self.{} = Some({});\n        }}",
            15 - i,
            p.field,
            p.ty.read()
        )
        .unwrap();
    }
    o.push_str("        Ok(())\n    }\n\n");
    o.push_str("    /// Writes the flag word and the properties that are set.\n");
    o.push_str("    pub fn encode(&self, buf: &mut BytesMut) {\n        let mut flags = 0u16;\n");
    for (i, p) in props.iter().enumerate() {
        writeln!(
            o,
            "        if self.{}.is_some() {{\n            flags |= 1 << {};\n        }}",
            p.field,
            15 - i
        )
        .unwrap();
    }
    o.push_str("        buf.put_u16(flags);\n");
    for p in &props {
        writeln!(
            o,
            "        if let Some(v) = &self.{} {{\n            {}\n        }}",
            p.field,
            p.ty.write("*v").replace("&*v", "v")
        )
        .unwrap();
    }
    o.push_str("    }\n}\n");
    o
}

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec/amqp-rabbitmq-0.9.1.json")
}

fn generated_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/generated.rs")
}

#[test]
fn generated_code_is_fresh() {
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(spec_path()).unwrap()).unwrap();
    let code = generate(&spec);
    let path = generated_path();
    if std::env::var("WARREN_CODEGEN").as_deref() == Ok("write") {
        std::fs::write(&path, &code).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == code,
        "src/generated.rs is stale: run `WARREN_CODEGEN=write cargo test -p warren-codec --test codegen`"
    );
}

#[test]
fn credentials_are_redacted_in_debug_output() {
    let m = warren_codec::ConnectionStartOk {
        response: "\0guest\0s3cr3t".into(),
        ..Default::default()
    };
    let shown = format!("{m:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn every_spec_method_is_generated() {
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(spec_path()).unwrap()).unwrap();
    let count: usize = spec["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["methods"].as_array().unwrap().len())
        .sum();
    assert_eq!(count, 66, "the spec README promises 66 methods");
    assert_eq!(warren_codec::ALL_METHOD_IDS.len(), count);
}
