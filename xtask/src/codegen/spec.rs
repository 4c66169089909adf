//! Loading and validating `spec/*.json`.
//!
//! Each file is read as untyped JSON first, then every entry is decoded on its
//! own, so an error can name the file, the entry index and the entry's name:
//! `spec/<file>: entry <n> (<name>): <what is wrong>`. Validation is complete
//! before anything is generated: a bad spec never produces a half-written tree.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

/// One problem in the spec, already formatted for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

fn err(file: &str, n: usize, name: &str, what: impl fmt::Display) -> SpecError {
    SpecError(format!("spec/{file}: entry {n} ({name}): {what}"))
}

fn file_err(file: &str, what: impl fmt::Display) -> SpecError {
    SpecError(format!("spec/{file}: {what}"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameType {
    pub name: String,
    pub value: u64,
    pub semconv: String,
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameFlag {
    pub name: String,
    pub bit: u64,
    pub description: String,
}

#[derive(Debug)]
pub struct FrameTypes {
    pub description: String,
    pub error_bit: u8,
    pub abort_marker: String,
    pub types: Vec<FrameType>,
    pub flags: Vec<FrameFlag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRange {
    pub name: String,
    pub start: u32,
    pub end: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorCode {
    pub id: u32,
    pub name: String,
    pub metric: Option<String>,
    pub description: String,
}

#[derive(Debug)]
pub struct Errors {
    pub description: String,
    pub ranges: Vec<ErrorRange>,
    pub errors: Vec<ErrorCode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    Counter,
    Gauge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricOrigin {
    Ebpf,
    Agent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub id: u32,
    pub name: String,
    pub field: String,
    #[serde(rename = "type")]
    pub kind: MetricType,
    pub unit: String,
    pub origin: MetricOrigin,
    pub description: String,
    #[serde(default)]
    pub obsolete: bool,
}

#[derive(Debug)]
pub struct Metrics {
    pub description: String,
    pub metrics: Vec<Metric>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    pub id: u32,
    pub name: String,
    pub function: Option<String>,
    pub description: String,
}

#[derive(Debug)]
pub struct Programs {
    pub description: String,
    pub programs: Vec<Program>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constant {
    pub name: String,
    pub value: u64,
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnumValue {
    pub name: String,
    pub value: u64,
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbiEnum {
    pub name: String,
    #[serde(rename = "type")]
    pub repr: String,
    pub description: String,
    pub values: Vec<EnumValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitfieldField {
    pub name: String,
    pub lsb: u32,
    pub width: u32,
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bitfield {
    pub name: String,
    #[serde(rename = "type")]
    pub repr: String,
    pub description: String,
    pub fields: Vec<BitfieldField>,
}

/// An array length: a number or the name of a constant.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Count {
    Literal(u64),
    Named(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub len: Option<Count>,
    #[serde(default, rename = "enum")]
    pub enum_name: Option<String>,
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Struct {
    pub name: String,
    pub description: String,
    pub fields: Vec<Field>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Map {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    pub max_entries: Count,
    #[serde(default)]
    pub flags: Option<String>,
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub description: String,
}

/// A struct with its computed layout.
#[derive(Debug)]
pub struct Layout {
    pub size: u64,
    pub align: u64,
    /// Offset of each field, in declaration order.
    pub offsets: Vec<u64>,
}

#[derive(Debug)]
pub struct Abi {
    pub description: String,
    pub constants: Vec<Constant>,
    pub enums: Vec<AbiEnum>,
    pub bitfields: Vec<Bitfield>,
    pub structs: Vec<Struct>,
    pub maps: Vec<Map>,
    pub globals: Vec<Global>,
    /// Layout per struct name.
    pub layouts: BTreeMap<String, Layout>,
    /// Every named count (constants plus the derived METRIC_COUNT and PROGRAM_COUNT).
    pub counts: BTreeMap<String, u64>,
}

impl Abi {
    pub fn count(&self, c: &Count) -> u64 {
        match c {
            Count::Literal(n) => *n,
            Count::Named(name) => self.counts[name],
        }
    }
}

/// One CPython minor version of `python.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonVersion {
    pub version: String,
    pub frame_layout: String,
    pub line_table: String,
    pub description: String,
    /// Offset (or size) by name; `None` where the version has no such field.
    pub offsets: BTreeMap<String, Option<u16>>,
}

impl PythonVersion {
    /// (major, minor) of a validated version.
    pub fn major_minor(&self) -> (u8, u8) {
        let (a, b) = self.version.split_once('.').unwrap_or(("0", "0"));
        (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
    }
}

#[derive(Debug)]
pub struct Python {
    pub description: String,
    pub versions: Vec<PythonVersion>,
}

/// Every offset a version lists (null where it lacks the field).
pub const PYTHON_OFFSETS: [&str; 25] = [
    "runtime_interpreters_head",
    "interpreter_threads_head",
    "thread_next",
    "thread_id",
    "thread_frame",
    "cframe_current_frame",
    "frame_previous",
    "frame_code",
    "frame_instruction",
    "frame_is_entry",
    "frame_owner",
    "code_name",
    "code_qualname",
    "code_filename",
    "code_firstlineno",
    "code_linetable",
    "code_instructions",
    "unicode_ascii_size",
    "unicode_compact_size",
    "unicode_length",
    "unicode_state",
    "bytes_size",
    "bytes_data",
    "object_type",
    "type_name",
];

/// Offsets a layout cannot do without.
fn python_required(layout: &str) -> &'static [&'static str] {
    match layout {
        "frame_object" => &[],
        "entry_flag" => &["frame_is_entry", "code_instructions", "code_qualname"],
        _ => &["frame_owner", "code_instructions", "code_qualname"],
    }
}

/// Line-table formats userspace knows.
pub const PYTHON_LINE_TABLES: [&str; 3] = ["lnotab", "address_ranges", "locations"];

/// The whole spec, validated.
#[derive(Debug)]
pub struct Spec {
    pub frame_types: FrameTypes,
    pub errors: Errors,
    pub metrics: Metrics,
    pub programs: Programs,
    pub abi: Abi,
    pub python: Python,
}

/// Spec file names, in the order they are read.
pub const FILES: [&str; 6] = [
    "frame_types.json",
    "errors.json",
    "metrics.json",
    "programs.json",
    "abi.json",
    "python.json",
];

/// Reads and validates every spec file under `spec_dir`.
pub fn load(spec_dir: &Path) -> Result<Spec, SpecError> {
    let mut texts = BTreeMap::new();
    for file in FILES {
        let path = spec_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| file_err(file, format!("cannot read {}: {e}", path.display())))?;
        texts.insert(file, text);
    }
    parse(|file| texts[file].as_str())
}

/// Validates spec texts given by file name (used by tests with in-memory specs).
pub fn parse<'a>(text_of: impl Fn(&str) -> &'a str) -> Result<Spec, SpecError> {
    let frame_types = parse_frame_types(text_of("frame_types.json"))?;
    let metrics = parse_metrics(text_of("metrics.json"))?;
    let errors = parse_errors(text_of("errors.json"), &metrics)?;
    let programs = parse_programs(text_of("programs.json"))?;
    let abi = parse_abi(text_of("abi.json"), &metrics, &programs)?;
    let python = parse_python(text_of("python.json"), &abi)?;
    Ok(Spec {
        frame_types,
        errors,
        metrics,
        programs,
        abi,
        python,
    })
}

fn parse_python(text: &str, abi: &Abi) -> Result<Python, SpecError> {
    const F: &str = "python.json";
    let root = parse_root(F, text)?;
    check_keys(F, &root, &["description", "versions"])?;
    let description: String = take(F, &root, "description")?;
    let versions: Vec<PythonVersion> = entries(F, &root, "versions")?;
    let layouts = abi
        .enums
        .iter()
        .find(|e| e.name == "python_frame_layout")
        .ok_or_else(|| file_err(F, "abi.json has no enum python_frame_layout"))?;
    let mut seen = BTreeSet::new();
    for (n, v) in versions.iter().enumerate() {
        let name = v.version.as_str();
        let parsed = v
            .version
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse::<u8>().ok()?, b.parse::<u8>().ok()?)));
        match parsed {
            Some((3, minor)) if minor < 16 => {}
            _ => return Err(err(F, n, name, "version must be \"3.N\" with N < 16 (it is packed in 12 bits as major << 8 | minor)")),
        }
        if !seen.insert(name) {
            return Err(err(F, n, name, "duplicate version"));
        }
        if v.description.trim().is_empty() {
            return Err(err(F, n, name, "description is empty"));
        }
        if !layouts.values.iter().any(|x| x.name == v.frame_layout) {
            return Err(err(
                F,
                n,
                name,
                format!(
                    "frame_layout \"{}\" is not a value of python_frame_layout",
                    v.frame_layout
                ),
            ));
        }
        if !PYTHON_LINE_TABLES.contains(&v.line_table.as_str()) {
            return Err(err(
                F,
                n,
                name,
                format!(
                    "line_table \"{}\" is not one of {PYTHON_LINE_TABLES:?}",
                    v.line_table
                ),
            ));
        }
        for k in v.offsets.keys() {
            if !PYTHON_OFFSETS.contains(&k.as_str()) {
                return Err(err(F, n, name, format!("unknown offset \"{k}\"")));
            }
        }
        for k in PYTHON_OFFSETS {
            if !v.offsets.contains_key(k) {
                return Err(err(
                    F,
                    n,
                    name,
                    format!("offset \"{k}\" missing (null where the version has no such field)"),
                ));
            }
        }
        let always = PYTHON_OFFSETS.iter().filter(|k| {
            ![
                "cframe_current_frame",
                "frame_is_entry",
                "frame_owner",
                "code_qualname",
                "code_instructions",
            ]
            .contains(k)
        });
        for k in always.chain(python_required(&v.frame_layout)) {
            if v.offsets[*k].is_none() {
                return Err(err(
                    F,
                    n,
                    name,
                    format!(
                        "offset \"{k}\" is required by frame_layout {}",
                        v.frame_layout
                    ),
                ));
            }
        }
    }
    Ok(Python {
        description,
        versions,
    })
}

fn parse_root(file: &str, text: &str) -> Result<serde_json::Map<String, Value>, SpecError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(file_err(file, "the top level must be a JSON object")),
        Err(e) => Err(file_err(file, format!("invalid JSON: {e}"))),
    }
}

fn take<T: DeserializeOwned>(
    file: &str,
    root: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<T, SpecError> {
    let v = root
        .get(key)
        .ok_or_else(|| file_err(file, format!("missing top-level key \"{key}\"")))?;
    serde_json::from_value(v.clone()).map_err(|e| file_err(file, format!("\"{key}\": {e}")))
}

fn check_keys(
    file: &str,
    root: &serde_json::Map<String, Value>,
    allowed: &[&str],
) -> Result<(), SpecError> {
    for k in root.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(file_err(
                file,
                format!("unknown top-level key \"{k}\" (expected {allowed:?})"),
            ));
        }
    }
    Ok(())
}

/// Decodes the array at `root[key]` entry by entry.
fn entries<T: DeserializeOwned>(
    file: &str,
    root: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Vec<T>, SpecError> {
    let arr = match root.get(key) {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(file_err(file, format!("\"{key}\" must be an array"))),
        None => return Err(file_err(file, format!("missing top-level key \"{key}\""))),
    };
    arr.iter()
        .enumerate()
        .map(|(n, v)| {
            let name = v.get("name").and_then(Value::as_str).unwrap_or("?");
            serde_json::from_value(v.clone()).map_err(|e| err(file, n, name, e))
        })
        .collect()
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_upper_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Checks snake_case names, non-empty descriptions and uniqueness of names
/// and numeric values across a list of entries.
fn check_unique<'a>(
    file: &str,
    items: impl Iterator<Item = (&'a str, u64, &'a str)>,
    value_word: &str,
) -> Result<(), SpecError> {
    let mut names = BTreeMap::new();
    let mut values = BTreeMap::new();
    for (n, (name, value, description)) in items.enumerate() {
        if !is_ident(name) {
            return Err(err(
                file,
                n,
                name,
                "name must be snake_case ([a-z][a-z0-9_]*)",
            ));
        }
        if description.trim().is_empty() {
            return Err(err(file, n, name, "description is empty"));
        }
        if let Some(first) = names.insert(name, n) {
            return Err(err(
                file,
                n,
                name,
                format!("duplicate name (entry {first} has it too)"),
            ));
        }
        if let Some(first) = values.insert(value, n) {
            return Err(err(
                file,
                n,
                name,
                format!("duplicate {value_word} {value} (entry {first} has it too)"),
            ));
        }
    }
    Ok(())
}

fn parse_frame_types(text: &str) -> Result<FrameTypes, SpecError> {
    const F: &str = "frame_types.json";
    let root = parse_root(F, text)?;
    check_keys(
        F,
        &root,
        &["description", "error_bit", "abort_marker", "types", "flags"],
    )?;
    let description: String = take(F, &root, "description")?;
    let error_bit: u8 = take(F, &root, "error_bit")?;
    let abort_marker: String = take(F, &root, "abort_marker")?;
    let types: Vec<FrameType> = entries(F, &root, "types")?;
    let flags: Vec<FrameFlag> = entries(F, &root, "flags")?;
    check_unique(
        F,
        types
            .iter()
            .map(|t| (t.name.as_str(), t.value, t.description.as_str())),
        "value",
    )?;
    for (n, t) in types.iter().enumerate() {
        if t.value > 15 {
            return Err(err(
                F,
                n,
                &t.name,
                format!(
                    "value {} does not fit the 4-bit type field of the frame header (0..=15)",
                    t.value
                ),
            ));
        }
        if t.semconv.is_empty() {
            return Err(err(F, n, &t.name, "semconv string is empty"));
        }
    }
    if !error_bit.is_power_of_two() || error_bit < 16 {
        return Err(file_err(
            F,
            format!("error_bit {error_bit} must be a single bit above the 4-bit type"),
        ));
    }
    check_unique(
        F,
        flags
            .iter()
            .map(|f| (f.name.as_str(), f.bit, f.description.as_str())),
        "bit",
    )
    .map_err(|e| SpecError(e.0.replacen("entry", "flags entry", 1)))?;
    for (n, f) in flags.iter().enumerate() {
        if f.bit > 3 {
            return Err(SpecError(format!(
                "spec/{F}: flags entry {n} ({}): bit {} does not fit the 4-bit flags field",
                f.name, f.bit
            )));
        }
    }
    if !types.iter().any(|t| t.name == "unknown" && t.value == 0) {
        return Err(file_err(
            F,
            "type 0 must be \"unknown\" (the abort marker builds on it)",
        ));
    }
    Ok(FrameTypes {
        description,
        error_bit,
        abort_marker,
        types,
        flags,
    })
}

fn parse_metrics(text: &str) -> Result<Metrics, SpecError> {
    const F: &str = "metrics.json";
    let root = parse_root(F, text)?;
    check_keys(F, &root, &["description", "metrics"])?;
    let description: String = take(F, &root, "description")?;
    let metrics: Vec<Metric> = entries(F, &root, "metrics")?;
    check_unique(
        F,
        metrics
            .iter()
            .map(|m| (m.name.as_str(), m.id as u64, m.description.as_str())),
        "id",
    )
    .map_err(|e| SpecError(e.0.replace("duplicate id", "reused id")))?;
    let mut fields = BTreeMap::new();
    for (n, m) in metrics.iter().enumerate() {
        // Ids are array indices on the eBPF side: they must be 0..count with no
        // hole, in order, so that appending is the only way to add one.
        if m.id as usize != n {
            return Err(err(
                F,
                n,
                &m.name,
                format!(
                    "id {} out of sequence: ids are append-only and must be 0..{} in order (missing id {n}?)",
                    m.id,
                    metrics.len()
                ),
            ));
        }
        if m.field.is_empty() || m.field.contains(char::is_whitespace) {
            return Err(err(
                F,
                n,
                &m.name,
                "field must be a non-empty OTel metric name",
            ));
        }
        if let Some(first) = fields.insert(m.field.as_str(), n) {
            return Err(err(
                F,
                n,
                &m.name,
                format!("duplicate field {} (entry {first} has it too)", m.field),
            ));
        }
        if m.unit.is_empty() {
            return Err(err(F, n, &m.name, "unit is empty"));
        }
    }
    Ok(Metrics {
        description,
        metrics,
    })
}

fn parse_errors(text: &str, metrics: &Metrics) -> Result<Errors, SpecError> {
    const F: &str = "errors.json";
    let root = parse_root(F, text)?;
    check_keys(F, &root, &["description", "ranges", "errors"])?;
    let description: String = take(F, &root, "description")?;
    let ranges: Vec<ErrorRange> = entries(F, &root, "ranges")?;
    let errors: Vec<ErrorCode> = entries(F, &root, "errors")?;
    for (n, r) in ranges.iter().enumerate() {
        if r.start > r.end {
            return Err(SpecError(format!(
                "spec/{F}: ranges entry {n} ({}): start {} is after end {}",
                r.name, r.start, r.end
            )));
        }
        if let Some(prev) = ranges[..n]
            .iter()
            .find(|p| p.start <= r.end && r.start <= p.end)
        {
            return Err(SpecError(format!(
                "spec/{F}: ranges entry {n} ({}): overlaps range {}",
                r.name, prev.name
            )));
        }
    }
    check_unique(
        F,
        errors
            .iter()
            .map(|e| (e.name.as_str(), e.id as u64, e.description.as_str())),
        "id",
    )?;
    let mut used_metrics = BTreeMap::new();
    for (n, e) in errors.iter().enumerate() {
        if !ranges.iter().any(|r| r.start <= e.id && e.id <= r.end) {
            return Err(err(F, n, &e.name, format!("id {} is in no range", e.id)));
        }
        match (&e.metric, e.id) {
            (None, 0) => {}
            (None, _) => {
                return Err(err(
                    F,
                    n,
                    &e.name,
                    "every error but ok must name the metric that counts it",
                ))
            }
            (Some(m), _) => {
                if !metrics.metrics.iter().any(|x| &x.name == m) {
                    return Err(err(
                        F,
                        n,
                        &e.name,
                        format!("metric \"{m}\" is not in metrics.json"),
                    ));
                }
                if let Some(first) = used_metrics.insert(m.as_str(), n) {
                    return Err(err(
                        F,
                        n,
                        &e.name,
                        format!("metric \"{m}\" already counts entry {first}"),
                    ));
                }
            }
        }
    }
    Ok(Errors {
        description,
        ranges,
        errors,
    })
}

fn parse_programs(text: &str) -> Result<Programs, SpecError> {
    const F: &str = "programs.json";
    let root = parse_root(F, text)?;
    check_keys(F, &root, &["description", "programs"])?;
    let description: String = take(F, &root, "description")?;
    let programs: Vec<Program> = entries(F, &root, "programs")?;
    check_unique(
        F,
        programs
            .iter()
            .map(|p| (p.name.as_str(), p.id as u64, p.description.as_str())),
        "id",
    )?;
    for (n, p) in programs.iter().enumerate() {
        if p.id > 255 {
            return Err(err(
                F,
                n,
                &p.name,
                format!("id {} does not fit a byte", p.id),
            ));
        }
        if p.id as usize != n {
            return Err(err(
                F,
                n,
                &p.name,
                format!(
                    "id {} out of sequence: ids index the program array, 0..{} in order",
                    p.id,
                    programs.len()
                ),
            ));
        }
        if let Some(f) = &p.function {
            if !is_ident(f) {
                return Err(err(
                    F,
                    n,
                    &p.name,
                    format!("function \"{f}\" is not a C identifier"),
                ));
            }
        }
    }
    Ok(Programs {
        description,
        programs,
    })
}

/// Size and alignment of a primitive ABI type.
pub fn primitive(ty: &str) -> Option<u64> {
    Some(match ty {
        "u8" | "i8" => 1,
        "u16" | "i16" => 2,
        "u32" | "i32" => 4,
        "u64" | "i64" => 8,
        _ => return None,
    })
}

const MAP_KINDS: [&str; 8] = [
    "ringbuf",
    "array",
    "percpu_array",
    "hash",
    "lru_hash",
    "lpm_trie",
    "prog_array",
    "percpu_hash",
];

fn parse_abi(text: &str, metrics: &Metrics, programs: &Programs) -> Result<Abi, SpecError> {
    const F: &str = "abi.json";
    let root = parse_root(F, text)?;
    check_keys(
        F,
        &root,
        &[
            "description",
            "constants",
            "enums",
            "bitfields",
            "structs",
            "maps",
            "globals",
        ],
    )?;
    let description: String = take(F, &root, "description")?;
    let constants: Vec<Constant> = entries(F, &root, "constants")?;
    let enums: Vec<AbiEnum> = entries(F, &root, "enums")?;
    let bitfields: Vec<Bitfield> = entries(F, &root, "bitfields")?;
    let structs: Vec<Struct> = entries(F, &root, "structs")?;
    let maps: Vec<Map> = entries(F, &root, "maps")?;
    let globals: Vec<Global> = entries(F, &root, "globals")?;

    let mut counts = BTreeMap::new();
    counts.insert("METRIC_COUNT".to_string(), metrics.metrics.len() as u64);
    counts.insert("PROGRAM_COUNT".to_string(), programs.programs.len() as u64);
    for (n, c) in constants.iter().enumerate() {
        if !is_upper_ident(&c.name) {
            return Err(err(F, n, &c.name, "constant names are UPPER_SNAKE_CASE"));
        }
        if counts.insert(c.name.clone(), c.value).is_some() {
            return Err(err(F, n, &c.name, "duplicate constant name"));
        }
    }

    let mut type_names = BTreeSet::new();
    for (n, e) in enums.iter().enumerate() {
        let Some(size) = primitive(&e.repr).filter(|_| e.repr.starts_with('u')) else {
            return Err(err(
                F,
                n,
                &e.name,
                format!("enum type \"{}\" must be u8, u16, u32 or u64", e.repr),
            ));
        };
        if !type_names.insert(e.name.clone()) || !is_ident(&e.name) {
            return Err(err(
                F,
                n,
                &e.name,
                "enum name must be snake_case and unique",
            ));
        }
        check_unique(
            F,
            e.values
                .iter()
                .map(|v| (v.name.as_str(), v.value, v.description.as_str())),
            "value",
        )
        .map_err(|x| SpecError(format!("{x} (in enum {})", e.name)))?;
        for v in &e.values {
            if size < 8 && v.value >= 1u64 << (size * 8) {
                return Err(err(
                    F,
                    n,
                    &e.name,
                    format!("value {} of {} does not fit {}", v.value, v.name, e.repr),
                ));
            }
        }
    }
    for (n, b) in bitfields.iter().enumerate() {
        let Some(size) = primitive(&b.repr).filter(|_| b.repr.starts_with('u')) else {
            return Err(err(
                F,
                n,
                &b.name,
                format!("bitfield type \"{}\" must be unsigned", b.repr),
            ));
        };
        if !type_names.insert(b.name.clone()) || !is_ident(&b.name) {
            return Err(err(
                F,
                n,
                &b.name,
                "bitfield name must be snake_case and unique",
            ));
        }
        let mut used: u128 = 0;
        for f in &b.fields {
            if f.width == 0 || f.lsb + f.width > (size * 8) as u32 {
                return Err(err(
                    F,
                    n,
                    &b.name,
                    format!(
                        "field {} (bits {}..{}) does not fit {}",
                        f.name,
                        f.lsb,
                        f.lsb + f.width,
                        b.repr
                    ),
                ));
            }
            let mask = ((1u128 << f.width) - 1) << f.lsb;
            if used & mask != 0 {
                return Err(err(
                    F,
                    n,
                    &b.name,
                    format!("field {} overlaps another field", f.name),
                ));
            }
            used |= mask;
            if !is_ident(&f.name) {
                return Err(err(
                    F,
                    n,
                    &b.name,
                    format!("field name {} must be snake_case", f.name),
                ));
            }
        }
    }

    // Layouts with C's rules; a struct may only use structs declared before it.
    let mut layouts: BTreeMap<String, Layout> = BTreeMap::new();
    for (n, s) in structs.iter().enumerate() {
        if !type_names.insert(s.name.clone()) || !is_ident(&s.name) {
            return Err(err(
                F,
                n,
                &s.name,
                "struct name must be snake_case and unique among types",
            ));
        }
        if s.fields.is_empty() {
            return Err(err(F, n, &s.name, "struct has no fields"));
        }
        let mut offset = 0u64;
        let mut align = 1u64;
        let mut offsets = Vec::new();
        let mut field_names = BTreeSet::new();
        for f in &s.fields {
            if !is_ident(&f.name) || !field_names.insert(f.name.as_str()) {
                return Err(err(
                    F,
                    n,
                    &s.name,
                    format!("field name \"{}\" must be snake_case and unique", f.name),
                ));
            }
            let (fsize, falign) = if let Some(p) = primitive(&f.ty) {
                (p, p)
            } else if let Some(l) = layouts.get(&f.ty) {
                (l.size, l.align)
            } else {
                return Err(err(F, n, &s.name, format!("field {} has unknown type \"{}\" (primitives: u8..u64, i8..i64, or an earlier struct)", f.name, f.ty)));
            };
            if let Some(e) = &f.enum_name {
                let Some(en) = enums.iter().find(|x| &x.name == e) else {
                    return Err(err(
                        F,
                        n,
                        &s.name,
                        format!("field {} names unknown enum \"{e}\"", f.name),
                    ));
                };
                if en.repr != f.ty {
                    return Err(err(
                        F,
                        n,
                        &s.name,
                        format!("field {} is {} but enum {e} is {}", f.name, f.ty, en.repr),
                    ));
                }
            }
            let len = match &f.len {
                None => 1,
                Some(Count::Literal(l)) => *l,
                Some(Count::Named(c)) => *counts.get(c).ok_or_else(|| {
                    err(
                        F,
                        n,
                        &s.name,
                        format!("field {} has unknown length constant \"{c}\"", f.name),
                    )
                })?,
            };
            if len == 0 {
                return Err(err(F, n, &s.name, format!("field {} has length 0", f.name)));
            }
            if !offset.is_multiple_of(falign) {
                return Err(err(F, n, &s.name, format!(
                    "field {} at offset {offset} needs {} bytes of padding before it; add an explicit padding field",
                    f.name,
                    falign - offset % falign
                )));
            }
            offsets.push(offset);
            offset += fsize * len;
            align = align.max(falign);
        }
        if !offset.is_multiple_of(align) {
            return Err(err(F, n, &s.name, format!(
                "size {offset} needs {} bytes of tail padding to reach alignment {align}; add an explicit padding field",
                align - offset % align
            )));
        }
        layouts.insert(
            s.name.clone(),
            Layout {
                size: offset,
                align,
                offsets,
            },
        );
    }

    let mut map_names = BTreeSet::new();
    for (n, m) in maps.iter().enumerate() {
        if !is_ident(&m.name) || !map_names.insert(m.name.as_str()) {
            return Err(err(F, n, &m.name, "map name must be snake_case and unique"));
        }
        if !MAP_KINDS.contains(&m.kind.as_str()) {
            return Err(err(
                F,
                n,
                &m.name,
                format!("unknown map type \"{}\" (known: {MAP_KINDS:?})", m.kind),
            ));
        }
        let ringbuf = m.kind == "ringbuf";
        for (what, t) in [("key", &m.key), ("value", &m.value)] {
            match (ringbuf, t) {
                (true, Some(_)) => {
                    return Err(err(F, n, &m.name, format!("a ringbuf has no {what}")))
                }
                (false, None) => return Err(err(F, n, &m.name, format!("missing {what} type"))),
                (false, Some(t)) if primitive(t).is_none() && !layouts.contains_key(t) => {
                    return Err(err(
                        F,
                        n,
                        &m.name,
                        format!("{what} has unknown type \"{t}\""),
                    ))
                }
                _ => {}
            }
        }
        let entries = match &m.max_entries {
            Count::Literal(v) => *v,
            Count::Named(c) => *counts.get(c).ok_or_else(|| {
                err(
                    F,
                    n,
                    &m.name,
                    format!("unknown max_entries constant \"{c}\""),
                )
            })?,
        };
        if entries == 0 || entries > u32::MAX as u64 {
            return Err(err(F, n, &m.name, "max_entries must be in 1..=u32::MAX"));
        }
        if ringbuf && (!entries.is_power_of_two() || entries < 4096) {
            return Err(err(
                F,
                n,
                &m.name,
                "a ringbuf size must be a power of two of at least one page",
            ));
        }
        if let Some(flags) = &m.flags {
            if !is_upper_ident(flags) {
                return Err(err(
                    F,
                    n,
                    &m.name,
                    format!("flags \"{flags}\" must be a BPF_F_* name"),
                ));
            }
        }
        if m.kind == "lpm_trie" && m.flags.as_deref() != Some("BPF_F_NO_PREALLOC") {
            return Err(err(
                F,
                n,
                &m.name,
                "an lpm_trie requires flags BPF_F_NO_PREALLOC",
            ));
        }
    }
    let mut global_names = BTreeSet::new();
    for (n, g) in globals.iter().enumerate() {
        if !is_ident(&g.name) || !global_names.insert(g.name.as_str()) {
            return Err(err(
                F,
                n,
                &g.name,
                "global name must be snake_case and unique",
            ));
        }
        if primitive(&g.ty).is_none() {
            return Err(err(
                F,
                n,
                &g.name,
                format!("global type \"{}\" must be a primitive", g.ty),
            ));
        }
    }

    Ok(Abi {
        description,
        constants,
        enums,
        bitfields,
        structs,
        maps,
        globals,
        layouts,
        counts,
    })
}
