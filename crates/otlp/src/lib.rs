//! OpenTelemetry profiles (OTLP, `v1development`) from and to the
//! [`profile`] model.
//!
//! * [`encode`] turns profiles into an `ExportProfilesServiceRequest` the way
//!   the OpenTelemetry eBPF profiler does, so backends built for upstream
//!   accept our data unchanged (see `encode.rs` for every choice).
//! * [`validate`] checks what a receiver must be able to rely on before it
//!   follows any index: bounds of every reference, the zero entries, the
//!   frame type on every location, sample shapes. Errors name the offending
//!   field (`location_table[5].mapping_index 9 out of range (3 mappings)`).
//! * [`decode`] / [`decode_lenient`] turn a (validated) request back into the
//!   model; the lenient form drops the profiles the model cannot represent
//!   and says why, for OTLP partial success.
//! * [`json`] reads and writes the OTLP/JSON mapping.
//!
//! # Pinned protocol version
//! The wire format is **opentelemetry-proto v1.10** (v1.11 is wire-identical
//! for profiles), through the Rust `opentelemetry-proto` 0.33 crate.
//! Endpoints of v1.9 and earlier put other fields at the same numbers and
//! would exchange data without a decode error but with values and attribute
//! indices swapped; the development-version header
//! ([`PROFILES_VERSION_HEADER`] = [`PROFILES_VERSION`]) is how a receiver tells
//! them apart before decoding. Version "1" is the v1.10/v1.11 schema (the
//! OpenTelemetry collector's pdata pins the same value for it).
//!
//! Architecture invariant: pure (no C toolchain, no TLS, no I/O); the agent's
//! exporter and the collector do the transport.

mod decode;
mod encode;
pub mod json;
mod validate;

pub use decode::{decode, decode_lenient, DecodedResource, Lenient, RejectedProfile};
pub use encode::{encode, ResourceInfo, SCOPE_NAME};
pub use validate::{validate, ValidationError};

/// The generated OTLP types, re-exported so users need not depend on
/// `opentelemetry-proto` with the same features themselves.
pub use opentelemetry_proto::tonic as proto;

pub use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesPartialSuccess, ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};

/// Request metadata (gRPC) / HTTP header naming the profiles schema version
/// of a `v1development` request. Receivers reject versions they do not know
/// before decoding; an absent header means "1".
pub const PROFILES_VERSION_HEADER: &str = "otlp-profiles-development-version";

/// The development version we send and the only one we accept: "1", the
/// proto v1.10/v1.11 profiles schema. Compared exactly (no whitespace,
/// leading zeros or lists), as the OpenTelemetry collector does.
pub const PROFILES_VERSION: &str = "1";

/// Checks the values of [`PROFILES_VERSION_HEADER`] a request carried (none,
/// one, or several when a client or proxy repeated it).
pub fn check_profiles_version<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut it = values.into_iter();
    let first = it.next();
    if it.next().is_some() {
        return Err(format!(
            "{PROFILES_VERSION_HEADER} must contain exactly one value"
        ));
    }
    let v = first.unwrap_or("1");
    if v != PROFILES_VERSION {
        return Err(format!(
            "invalid or unsupported {PROFILES_VERSION_HEADER} {v:?}: supported version is {PROFILES_VERSION} (OTLP profiles proto v1.10/v1.11)"
        ));
    }
    Ok(())
}

/// Attribute keys (OpenTelemetry semantic conventions) this crate writes and
/// reads.
pub mod keys {
    pub const PROCESS_PID: &str = "process.pid";
    pub const PROCESS_EXECUTABLE_PATH: &str = "process.executable.path";
    pub const PROCESS_EXECUTABLE_NAME: &str = "process.executable.name";
    pub const CONTAINER_ID: &str = "container.id";
    pub const HOST_NAME: &str = "host.name";
    pub const HOST_ID: &str = "host.id";
    pub const SERVICE_NAME: &str = "service.name";
    pub const THREAD_NAME: &str = "thread.name";
    pub const THREAD_ID: &str = "thread.id";
    pub const CPU_LOGICAL_NUMBER: &str = "cpu.logical_number";
    pub const FRAME_TYPE: &str = "profile.frame.type";
    pub const BUILD_ID_HTLHASH: &str = "process.executable.build_id.htlhash";
    pub const BUILD_ID_GNU: &str = "process.executable.build_id.gnu";
    pub const BUILD_ID_GO: &str = "process.executable.build_id.go";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_header_rules() {
        assert!(check_profiles_version([]).is_ok());
        assert!(check_profiles_version(["1"]).is_ok());
        for bad in ["2", "01", " 1", "", "1,1"] {
            let e = check_profiles_version([bad]).unwrap_err();
            assert!(e.contains(PROFILES_VERSION_HEADER), "{e}");
            assert!(e.contains("supported version is 1"), "{e}");
        }
        let e = check_profiles_version(["1", "1"]).unwrap_err();
        assert!(e.contains("exactly one value"), "{e}");
    }
}
