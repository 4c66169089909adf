//! OTLP/JSON for profiles requests.
//!
//! `opentelemetry-proto`'s `with-serde` derives do not implement the OTLP
//! JSON mapping for the profiles messages: most of them lack
//! `#[serde(default)]`, so any omitted default field (which the mapping
//! requires producers to omit) fails, and 64-bit integers are not read from
//! strings. So this module uses the protobuf JSON mapping of `prost-reflect`
//! on the descriptors `opentelemetry-proto` ships: lowerCamelCase or original
//! field names, 64-bit integers as strings or numbers, omitted defaults.
//!
//! The one OTLP deviation from the protobuf mapping is handled around it:
//! `traceId`, `spanId` (links) and `profileId` are hex strings, not base64.

use crate::ExportProfilesServiceRequest;
use base64::Engine;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use serde_json::Value;
use std::fmt;
use std::sync::OnceLock;

const REQUEST: &str =
    "opentelemetry.proto.collector.profiles.v1development.ExportProfilesServiceRequest";

/// Fields OTLP/JSON writes as hex.
const HEX_FIELDS: [&str; 3] = ["traceId", "spanId", "profileId"];
const HEX_FIELDS_SNAKE: [&str; 3] = ["trace_id", "span_id", "profile_id"];

/// Why a JSON body was not a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError(String);

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid OTLP/JSON: {}", self.0)
    }
}

impl std::error::Error for JsonError {}

fn descriptor() -> Result<&'static MessageDescriptor, JsonError> {
    static D: OnceLock<Result<MessageDescriptor, String>> = OnceLock::new();
    D.get_or_init(|| {
        let pool =
            DescriptorPool::decode(opentelemetry_proto::DESCRIPTORS).map_err(|e| e.to_string())?;
        pool.get_message_by_name(REQUEST)
            .ok_or_else(|| format!("{REQUEST} missing from the descriptors"))
    })
    .as_ref()
    .map_err(|e| JsonError(format!("descriptor pool: {e}")))
}

/// Rewrites the OTLP hex byte fields to (`to_base64`) or from protobuf
/// JSON's base64 in place.
fn convert_hex(v: &mut Value, to_base64: bool) -> Result<(), JsonError> {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let is_hex =
                    HEX_FIELDS.contains(&k.as_str()) || HEX_FIELDS_SNAKE.contains(&k.as_str());
                match val {
                    Value::String(s) if is_hex => {
                        *s = if to_base64 {
                            let bytes = decode_hex(s)
                                .ok_or_else(|| JsonError(format!("{k} {s:?} is not hex")))?;
                            base64::engine::general_purpose::STANDARD.encode(bytes)
                        } else {
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(s.as_bytes())
                                .map_err(|e| JsonError(format!("{k}: {e}")))?;
                            bytes.iter().map(|b| format!("{b:02x}")).collect()
                        };
                    }
                    _ => convert_hex(val, to_base64)?,
                }
            }
        }
        Value::Array(a) => {
            for e in a {
                convert_hex(e, to_base64)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses an OTLP/JSON `ExportProfilesServiceRequest`. Unknown fields are
/// rejected (a misspelt field would otherwise silently drop data).
pub fn from_json(body: &[u8]) -> Result<ExportProfilesServiceRequest, JsonError> {
    let desc = descriptor()?;
    let mut v: Value = serde_json::from_slice(body).map_err(|e| JsonError(e.to_string()))?;
    convert_hex(&mut v, true)?;
    let dynamic = DynamicMessage::deserialize_with_options(
        desc.clone(),
        v,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|e| JsonError(e.to_string()))?;
    ExportProfilesServiceRequest::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|e| JsonError(format!("re-encoding: {e}")))
}

/// Writes a request as OTLP/JSON (lowerCamelCase, 64-bit integers as
/// strings, defaults omitted, hex ids).
pub fn to_json(req: &ExportProfilesServiceRequest) -> Result<String, JsonError> {
    let desc = descriptor()?;
    let dynamic = DynamicMessage::decode(desc.clone(), req.encode_to_vec().as_slice())
        .map_err(|e| JsonError(e.to_string()))?;
    let mut v = dynamic
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .map_err(|e| JsonError(e.to_string()))?;
    convert_hex(&mut v, false)?;
    serde_json::to_string(&v).map_err(|e| JsonError(e.to_string()))
}
