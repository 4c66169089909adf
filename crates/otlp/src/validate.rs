//! Structural validation of an `ExportProfilesServiceRequest`.
//!
//! A receiver follows indices from samples to stacks to locations to
//! functions and strings; one bad index would otherwise mean a panic or a
//! silently wrong profile much later. [`validate`] checks everything once, up
//! front, in time linear in the message size, and names the first problem.
//!
//! Rules enforced (the spec's MUSTs and what backends rely on):
//! * every index is non-negative and inside its table: stack, location,
//!   function, mapping, string (also in Resource/Scope `KeyValue.key_strindex`
//!   and `AnyValue.string_value_strindex`, nested values included),
//!   attribute, link;
//! * entry 0 of every non-empty table is the zero value (an `AnyValue` that
//!   is present but empty counts as zero: Go's pdata always writes it).
//!   Index 0 into an *empty* table is accepted as "unset";
//! * every location other than the zero entry has a `profile.frame.type`
//!   attribute with a string value, and stacks do not reference location 0;
//! * a sample has values or timestamps; when both, the same number; values
//!   without timestamps hold exactly one entry (one sample type per
//!   profile); values are not negative;
//! * a profile with samples has a sample type.
//!
//! Not enforced: timestamps inside `[time, time + duration)` (a SHOULD in the
//! spec, and upstream's agent sets the window end to its last timestamp),
//! duplicate or orphaned dictionary entries (wasteful, not wrong).

use crate::keys;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development as pb;
use std::fmt;

/// Why a request was rejected: a path to the offending field and the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError(pub(crate) String);

impl ValidationError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }

    /// The message, e.g. `location_table[5].mapping_index 9 out of range (3 mappings)`.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValidationError {}

type R = Result<(), ValidationError>;

/// Deepest nesting of array/kvlist attribute values we follow.
const MAX_VALUE_DEPTH: usize = 32;

pub(crate) static EMPTY_DICT: pb::ProfilesDictionary = pb::ProfilesDictionary {
    mapping_table: Vec::new(),
    location_table: Vec::new(),
    function_table: Vec::new(),
    link_table: Vec::new(),
    string_table: Vec::new(),
    attribute_table: Vec::new(),
    stack_table: Vec::new(),
};

/// Checks a request; see the module docs for the rules.
pub fn validate(req: &ExportProfilesServiceRequest) -> R {
    let d = req.dictionary.as_ref().unwrap_or(&EMPTY_DICT);
    let v = V { d };
    v.zero_entries()?;
    v.tables()?;
    for (r, rp) in req.resource_profiles.iter().enumerate() {
        if let Some(res) = &rp.resource {
            for (a, kv) in res.attributes.iter().enumerate() {
                v.key_value(kv, &|| {
                    format!("resource_profiles[{r}].resource.attributes[{a}]")
                })?;
            }
        }
        for (s, sp) in rp.scope_profiles.iter().enumerate() {
            if let Some(scope) = &sp.scope {
                for (a, kv) in scope.attributes.iter().enumerate() {
                    v.key_value(kv, &|| {
                        format!("resource_profiles[{r}].scope_profiles[{s}].scope.attributes[{a}]")
                    })?;
                }
            }
            for (p, prof) in sp.profiles.iter().enumerate() {
                let path = || format!("resource_profiles[{r}].scope_profiles[{s}].profiles[{p}]");
                v.profile(prof, &path)?;
            }
        }
    }
    Ok(())
}

struct V<'a> {
    d: &'a pb::ProfilesDictionary,
}

/// `index` of a reference named by `what()` into a table of `len` entries
/// whose entries are called `plural`.
fn check_index(index: i32, len: usize, what: &dyn Fn() -> String, plural: &str) -> R {
    if index < 0 {
        return Err(ValidationError::new(format!(
            "{} {index} is negative",
            what()
        )));
    }
    // Index 0 into an empty table means "unset".
    if index == 0 && len == 0 {
        return Ok(());
    }
    if index as usize >= len {
        return Err(ValidationError::new(format!(
            "{} {index} out of range ({len} {plural})",
            what()
        )));
    }
    Ok(())
}

fn is_zero_any(v: &Option<AnyValue>) -> bool {
    matches!(v, None | Some(AnyValue { value: None }))
}

impl V<'_> {
    fn string(&self, i: i32, what: &dyn Fn() -> String) -> R {
        check_index(i, self.d.string_table.len(), what, "strings")
    }

    fn attribute(&self, i: i32, what: &dyn Fn() -> String) -> R {
        check_index(i, self.d.attribute_table.len(), what, "attributes")
    }

    fn zero_entries(&self) -> R {
        let d = self.d;
        let bad = |t: &str| {
            Err(ValidationError::new(format!(
                "{t}[0] is not the zero value"
            )))
        };
        if d.mapping_table
            .first()
            .is_some_and(|m| *m != pb::Mapping::default())
        {
            return bad("mapping_table");
        }
        if d.location_table
            .first()
            .is_some_and(|l| *l != pb::Location::default())
        {
            return bad("location_table");
        }
        if d.function_table
            .first()
            .is_some_and(|f| *f != pb::Function::default())
        {
            return bad("function_table");
        }
        if d.link_table
            .first()
            .is_some_and(|l| *l != pb::Link::default())
        {
            return bad("link_table");
        }
        if d.string_table.first().is_some_and(|s| !s.is_empty()) {
            return bad("string_table");
        }
        if d.attribute_table
            .first()
            .is_some_and(|a| a.key_strindex != 0 || a.unit_strindex != 0 || !is_zero_any(&a.value))
        {
            return bad("attribute_table");
        }
        if d.stack_table
            .first()
            .is_some_and(|s| !s.location_indices.is_empty())
        {
            return bad("stack_table");
        }
        Ok(())
    }

    fn tables(&self) -> R {
        let d = self.d;
        for (i, m) in d.mapping_table.iter().enumerate() {
            self.string(m.filename_strindex, &|| {
                format!("mapping_table[{i}].filename_strindex")
            })?;
            for (k, &a) in m.attribute_indices.iter().enumerate() {
                self.attribute(a, &|| format!("mapping_table[{i}].attribute_indices[{k}]"))?;
            }
        }
        for (i, f) in d.function_table.iter().enumerate() {
            self.string(f.name_strindex, &|| {
                format!("function_table[{i}].name_strindex")
            })?;
            self.string(f.system_name_strindex, &|| {
                format!("function_table[{i}].system_name_strindex")
            })?;
            self.string(f.filename_strindex, &|| {
                format!("function_table[{i}].filename_strindex")
            })?;
        }
        for (i, a) in d.attribute_table.iter().enumerate() {
            self.string(a.key_strindex, &|| {
                format!("attribute_table[{i}].key_strindex")
            })?;
            self.string(a.unit_strindex, &|| {
                format!("attribute_table[{i}].unit_strindex")
            })?;
            if let Some(v) = &a.value {
                self.any_value(v, 0, &|| format!("attribute_table[{i}].value"))?;
            }
        }
        for (i, l) in d.location_table.iter().enumerate() {
            check_index(
                l.mapping_index,
                d.mapping_table.len(),
                &|| format!("location_table[{i}].mapping_index"),
                "mappings",
            )?;
            for (k, line) in l.lines.iter().enumerate() {
                check_index(
                    line.function_index,
                    d.function_table.len(),
                    &|| format!("location_table[{i}].lines[{k}].function_index"),
                    "functions",
                )?;
            }
            let mut has_type = false;
            for (k, &a) in l.attribute_indices.iter().enumerate() {
                self.attribute(a, &|| format!("location_table[{i}].attribute_indices[{k}]"))?;
                if let Some(kv) = d.attribute_table.get(a as usize) {
                    if self.str_at(kv.key_strindex) == Some(keys::FRAME_TYPE) {
                        if string_value(d, kv.value.as_ref()).is_none() {
                            return Err(ValidationError::new(format!(
                                "location_table[{i}]: {} attribute (attribute_table[{a}]) has no string value",
                                keys::FRAME_TYPE
                            )));
                        }
                        has_type = true;
                    }
                }
            }
            if i > 0 && !has_type {
                return Err(ValidationError::new(format!(
                    "location_table[{i}] has no {} attribute",
                    keys::FRAME_TYPE
                )));
            }
        }
        for (i, s) in d.stack_table.iter().enumerate() {
            for (k, &l) in s.location_indices.iter().enumerate() {
                let what = || format!("stack_table[{i}].location_indices[{k}]");
                check_index(l, d.location_table.len(), &what, "locations")?;
                if l == 0 {
                    return Err(ValidationError::new(format!(
                        "{} is 0, the zero location (which has no frame type)",
                        what()
                    )));
                }
            }
        }
        Ok(())
    }

    fn str_at(&self, i: i32) -> Option<&str> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.d.string_table.get(i))
            .map(String::as_str)
    }

    fn key_value(&self, kv: &KeyValue, what: &dyn Fn() -> String) -> R {
        self.string(kv.key_strindex, &|| format!("{}.key_strindex", what()))?;
        if let Some(v) = &kv.value {
            self.any_value(v, 0, &|| format!("{}.value", what()))?;
        }
        Ok(())
    }

    fn any_value(&self, v: &AnyValue, depth: usize, what: &dyn Fn() -> String) -> R {
        if depth > MAX_VALUE_DEPTH {
            return Err(ValidationError::new(format!(
                "{} nested deeper than {MAX_VALUE_DEPTH} levels",
                what()
            )));
        }
        match &v.value {
            Some(any_value::Value::StringValueStrindex(i)) => {
                self.string(*i, &|| format!("{}.string_value_strindex", what()))
            }
            Some(any_value::Value::ArrayValue(a)) => {
                for (k, e) in a.values.iter().enumerate() {
                    self.any_value(e, depth + 1, &|| format!("{}.array_value[{k}]", what()))?;
                }
                Ok(())
            }
            Some(any_value::Value::KvlistValue(l)) => {
                for (k, kv) in l.values.iter().enumerate() {
                    self.string(kv.key_strindex, &|| {
                        format!("{}.kvlist_value[{k}].key_strindex", what())
                    })?;
                    if let Some(e) = &kv.value {
                        self.any_value(e, depth + 1, &|| {
                            format!("{}.kvlist_value[{k}].value", what())
                        })?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn value_type(&self, vt: &pb::ValueType, what: &dyn Fn() -> String) -> R {
        self.string(vt.type_strindex, &|| format!("{}.type_strindex", what()))?;
        self.string(vt.unit_strindex, &|| format!("{}.unit_strindex", what()))
    }

    fn profile(&self, p: &pb::Profile, path: &dyn Fn() -> String) -> R {
        let d = self.d;
        match &p.sample_type {
            Some(vt) => self.value_type(vt, &|| format!("{}.sample_type", path()))?,
            None if !p.samples.is_empty() => {
                return Err(ValidationError::new(format!(
                    "{} has samples but no sample_type",
                    path()
                )))
            }
            None => {}
        }
        if let Some(vt) = &p.period_type {
            self.value_type(vt, &|| format!("{}.period_type", path()))?;
        }
        for (k, &a) in p.attribute_indices.iter().enumerate() {
            self.attribute(a, &|| format!("{}.attribute_indices[{k}]", path()))?;
        }
        for (i, s) in p.samples.iter().enumerate() {
            let sp = || format!("{}.samples[{i}]", path());
            check_index(
                s.stack_index,
                d.stack_table.len(),
                &|| format!("{}.stack_index", sp()),
                "stacks",
            )?;
            for (k, &a) in s.attribute_indices.iter().enumerate() {
                self.attribute(a, &|| format!("{}.attribute_indices[{k}]", sp()))?;
            }
            check_index(
                s.link_index,
                d.link_table.len(),
                &|| format!("{}.link_index", sp()),
                "links",
            )?;
            let (nv, nt) = (s.values.len(), s.timestamps_unix_nano.len());
            if nv == 0 && nt == 0 {
                return Err(ValidationError::new(format!(
                    "{} has neither values nor timestamps",
                    sp()
                )));
            }
            if nv > 0 && nt > 0 && nv != nt {
                return Err(ValidationError::new(format!(
                    "{} has {nv} values but {nt} timestamps (must be equal when both are set)",
                    sp()
                )));
            }
            if nt == 0 && nv != 1 {
                return Err(ValidationError::new(format!(
                    "{} has {nv} values without timestamps (one sample type per profile: expected 1)",
                    sp()
                )));
            }
            if let Some((k, v)) = s.values.iter().enumerate().find(|(_, v)| **v < 0) {
                return Err(ValidationError::new(format!(
                    "{}.values[{k}] {v} is negative",
                    sp()
                )));
            }
        }
        Ok(())
    }
}

/// The string of an attribute value, inline or through the string table.
pub(crate) fn string_value<'a>(
    d: &'a pb::ProfilesDictionary,
    v: Option<&'a AnyValue>,
) -> Option<&'a str> {
    match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        any_value::Value::StringValueStrindex(i) => usize::try_from(*i)
            .ok()
            .and_then(|i| d.string_table.get(i))
            .map(String::as_str),
        _ => None,
    }
}
