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
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses an OTLP/JSON `ExportProfilesServiceRequest`. Unknown fields are
/// ignored, as the OTLP specification requires of JSON receivers (so that
/// fields added by newer senders do not break older receivers, as with
/// binary protobuf).
pub fn from_json(body: &[u8]) -> Result<ExportProfilesServiceRequest, JsonError> {
    let desc = descriptor()?;
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    // The hex fields need a detour through `Value` (several times the body
    // in memory); most bodies have none and are read in one pass. A field
    // name could also hide behind a JSON escape (`\u0074raceId`): then it
    // is read as protobuf JSON base64, which fails loudly on hex.
    let needs_hex = [
        &b"traceId"[..],
        b"spanId",
        b"profileId",
        b"trace_id",
        b"span_id",
        b"profile_id",
    ]
    .iter()
    .any(|k| body.windows(k.len()).any(|w| w == *k));
    let dynamic = if needs_hex {
        let mut v: Value = serde_json::from_slice(body).map_err(|e| JsonError(e.to_string()))?;
        convert_hex(&mut v, true)?;
        DynamicMessage::deserialize_with_options(desc.clone(), v, &options)
    } else {
        let mut de = serde_json::Deserializer::from_slice(body);
        DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &options)
            .and_then(|m| de.end().map(|()| m))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::profiles::v1development as pb;

    #[test]
    fn ids_are_hex_and_round_trip() {
        let req = ExportProfilesServiceRequest {
            resource_profiles: vec![pb::ResourceProfiles {
                scope_profiles: vec![pb::ScopeProfiles {
                    profiles: vec![pb::Profile {
                        profile_id: vec![0xab; 16],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            dictionary: Some(pb::ProfilesDictionary {
                link_table: vec![
                    pb::Link::default(),
                    pb::Link {
                        trace_id: (0..16).collect(),
                        span_id: vec![0xff; 8],
                    },
                ],
                ..Default::default()
            }),
        };
        let text = to_json(&req).unwrap();
        assert!(
            text.contains("\"traceId\":\"000102030405060708090a0b0c0d0e0f\""),
            "{text}"
        );
        assert!(text.contains("\"spanId\":\"ffffffffffffffff\""), "{text}");
        assert!(
            text.contains("\"profileId\":\"abababababababababababababababab\""),
            "{text}"
        );
        assert_eq!(from_json(text.as_bytes()).unwrap(), req);
    }

    #[test]
    fn hand_written_otlp_json() {
        // Defaults omitted, 64-bit integers as strings or numbers, original
        // field names accepted too, resource keys through the string table.
        let body = br#"{
          "resourceProfiles": [{
            "resource": {"attributes": [{"keyStrindex": 1, "value": {"intValue": "42"}}]},
            "scopeProfiles": [{"profiles": [{
              "sampleType": {"typeStrindex": 2, "unitStrindex": 3},
              "timeUnixNano": "1700000000000000000",
              "period": 50000000,
              "samples": [{"stack_index": 1, "values": ["7"]}]
            }]}]
          }],
          "dictionary": {
            "stringTable": ["", "process.pid", "samples", "count", "f", "native"],
            "attributeTable": [{}, {"keyStrindex": 5, "value": {"stringValue": "native"}}],
            "functionTable": [{}, {"nameStrindex": 4}],
            "locationTable": [{}, {"address": "4096", "lines": [{"functionIndex": 1}], "attributeIndices": [1]}],
            "stackTable": [{}, {"locationIndices": [1]}],
            "mappingTable": [{}],
            "linkTable": [{}]
          }
        }"#;
        let req = from_json(body).unwrap();
        let p = &req.resource_profiles[0].scope_profiles[0].profiles[0];
        assert_eq!(p.time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(p.samples[0].values, vec![7]);
        assert_eq!(
            req.dictionary.as_ref().unwrap().location_table[1].address,
            4096
        );
        // The attribute key in the table uses a key that is not in the
        // string table under the "profile.frame.type" name, so validation
        // must complain about the frame type.
        let e = crate::validate(&req).unwrap_err();
        assert!(e.message().contains("profile.frame.type"), "{e}");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let req = from_json(
            br#"{"resourceProfile": [], "dictionary": {"newTable": [1, 2], "stringTable": [""]}}"#,
        )
        .unwrap();
        assert!(req.resource_profiles.is_empty());
        assert_eq!(req.dictionary.unwrap().string_table, vec![String::new()]);
    }

    #[test]
    fn bad_json_is_a_clear_error() {
        for (body, want) in [
            (&b"{"[..], "EOF"),
            (b"[]", "invalid type"),
            (
                b"{\"dictionary\": {\"linkTable\": [{\"traceId\": \"xyz\"}]}}",
                "traceId",
            ),
            (b"{\"dictionary\": {\"stringTable\": [1]}}", "invalid type"),
        ] {
            let e = from_json(body).unwrap_err().to_string();
            assert!(e.starts_with("invalid OTLP/JSON"), "{e}");
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }
}
