//! The constraints botocore's service models put on the input of every operation spillway
//! implements (`botocore.json`, written by `scripts/gen_validation_model.py`), and the walk
//! that checks a request against them the way AWS's front end does before an operation runs:
//! every broken constraint is collected, none stops the walk.
//!
//! **Order.** Violations come in the model's member order, depth first (a list's own length
//! before its members, member 1 before member 2); for one value: length, pattern, enum, range.
//! AWS's own order is not stable (it reports from hash sets), so this order is spillway's.
//!
//! **Wording.** As AWS writes it: `Value 'x' at 'productionVariants.1.member.variantName' failed
//! to satisfy constraint: Member must …` (member names with a lower-case first letter, list
//! members as `<list>.<n>.member`). A list of scalars whose members break their constraints
//! is reported once, at the list, with every constraint its members carry (`Member must
//! satisfy constraint: [...]`), a map's keys and values likewise (`Map keys must satisfy
//! constraint: [...]`). Lists and maps of structures are shown without their value (`Value at
//! 'tags'`), as AWS shows them.

use std::collections::HashMap;
use std::fmt::{Display, LowerExp};
use std::sync::OnceLock;

use regex_automata::meta::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::{Shown, Violation};

/// What the walk checks. SageMaker and Application Auto Scaling check everything; CloudWatch
/// answers types, missing members and enum values with its own errors
/// (`InvalidParameterValue`, `MissingParameter`) and leaves those to its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// A member of the wrong JSON type is a [`WrongType`].
    pub types: bool,
    /// A missing required member is a violation (`Member must not be null`).
    pub required: bool,
    /// A string outside its `enum` is a violation.
    pub enums: bool,
}

impl Rules {
    /// Every constraint of the model.
    pub const ALL: Rules = Rules {
        types: true,
        required: true,
        enums: true,
    };
}

/// A member whose JSON type is not the model's: AWS refuses the request before validating it
/// (`SerializationException`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongType {
    /// The member as the request names it: `ProductionVariants.1.InitialInstanceCount`.
    pub path: String,
    /// What the model wants there: "an integer", "a string", ...
    pub expected: &'static str,
}

#[derive(Debug, Deserialize)]
struct File {
    services: HashMap<String, ServiceModel>,
}

#[derive(Debug, Deserialize)]
struct ServiceModel {
    operations: HashMap<String, String>,
    shapes: HashMap<String, Shape>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Structure,
    List,
    Map,
    String,
    Integer,
    Long,
    Float,
    Double,
    Boolean,
    Timestamp,
    Blob,
}

#[derive(Debug, Deserialize)]
struct Shape {
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(default)]
    members: Vec<(String, String)>,
    #[serde(default)]
    required: Vec<String>,
    member: Option<String>,
    key: Option<String>,
    value: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    pattern: Option<String>,
    regex: Option<String>,
    #[serde(rename = "enum")]
    values: Option<Vec<String>>,
    #[serde(default)]
    sensitive: bool,
    #[serde(skip)]
    matcher: Option<Regex>,
}

impl Shape {
    fn is_scalar(&self) -> bool {
        !matches!(self.kind, Kind::Structure | Kind::List | Kind::Map)
    }

    fn is_float(&self) -> bool {
        matches!(self.kind, Kind::Float | Kind::Double)
    }

    /// A bound or value of this numeric shape as Java prints it (`5`, `0.0`).
    fn number(&self, v: f64) -> String {
        match self.kind {
            Kind::Float => java_double(v as f32),
            Kind::Double => java_double(v),
            _ => format!("{}", v as i64),
        }
    }

    /// Every constraint this scalar shape carries, as AWS lists a collection's member
    /// constraints: length (max, min), pattern, enum, value (max, min).
    fn sentences(&self, rules: Rules) -> Vec<String> {
        let mut out = vec![];
        if matches!(self.kind, Kind::String | Kind::Blob) {
            if let Some(max) = self.max {
                out.push(format!("Member must have length less than or equal to {}", max as i64));
            }
            if let Some(min) = self.min {
                out.push(format!(
                    "Member must have length greater than or equal to {}",
                    min as i64
                ));
            }
        }
        if let Some(p) = &self.pattern {
            out.push(format!("Member must satisfy regular expression pattern: {p}"));
        }
        if let Some(values) = self.values.as_ref().filter(|_| rules.enums) {
            out.push(enum_sentence(values));
        }
        if matches!(self.kind, Kind::Integer | Kind::Long | Kind::Float | Kind::Double) {
            if let Some(max) = self.max {
                out.push(format!(
                    "Member must have value less than or equal to {}",
                    self.number(max)
                ));
            }
            if let Some(min) = self.min {
                out.push(format!(
                    "Member must have value greater than or equal to {}",
                    self.number(min)
                ));
            }
        }
        out
    }
}

fn enum_sentence(values: &[String]) -> String {
    format!("Member must satisfy enum value set: [{}]", values.join(", "))
}

/// `f` as Java's `Float.toString`/`Double.toString` writes it: `1.0`, `0.25`, `1.0E7`.
fn java_double<F: Display + LowerExp + Into<f64> + Copy>(f: F) -> String {
    let v: f64 = f.into();
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = v.abs();
    if a == 0.0 || (1e-3..1e7).contains(&a) {
        let s = f.to_string();
        return if s.contains('.') { s } else { format!("{s}.0") };
    }
    let s = format!("{f:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    format!("{mantissa}E{exp}")
}

/// The model, parsed and its patterns compiled once.
fn model() -> &'static File {
    static MODEL: OnceLock<File> = OnceLock::new();
    MODEL.get_or_init(|| {
        let mut file: File = serde_json::from_str(include_str!("botocore.json"))
            .expect("src/core/validate/botocore.json parses (a unit test checks it)");
        for service in file.services.values_mut() {
            for shape in service.shapes.values_mut() {
                if let Some(r) = &shape.regex {
                    shape.matcher = Some(
                        Regex::new(&format!(r"\A(?:{r})\z"))
                            .expect("every pattern of botocore.json compiles (a unit test checks it)"),
                    );
                }
            }
        }
        file
    })
}

/// Whether the model has `operation` of `service`.
pub fn has_operation(service: &str, operation: &str) -> bool {
    model()
        .services
        .get(service)
        .is_some_and(|s| s.operations.contains_key(operation))
}

/// The operations of `service` the model has (`None` for a service it does not have).
pub fn operations(service: &str) -> Option<Vec<&'static str>> {
    let s = model().services.get(service)?;
    let mut ops: Vec<&str> = s.operations.keys().map(String::as_str).collect();
    ops.sort_unstable();
    Some(ops)
}

/// The `enum` values of a shape (`None` when the shape has no enum or does not exist).
pub fn enum_values(service: &str, shape: &str) -> Option<&'static [String]> {
    model().services.get(service)?.shapes.get(shape)?.values.as_deref()
}

/// Checks `input`, the JSON body of `operation` of `service`, against the model: every broken
/// constraint, in order. An operation the model does not have has none.
pub fn check(service: &str, operation: &str, input: &Value, rules: Rules) -> Result<Vec<Violation>, WrongType> {
    let Some(svc) = model().services.get(service) else {
        return Ok(vec![]);
    };
    let Some(root) = svc.operations.get(operation) else {
        return Ok(vec![]);
    };
    let mut walk = Walk {
        svc,
        rules,
        path: vec![],
        out: vec![],
    };
    walk.value(root, input)?;
    Ok(walk.out)
}

#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Member(&'a str),
    Index(usize),
    Key(&'a str),
}

struct Walk<'v> {
    svc: &'static ServiceModel,
    rules: Rules,
    path: Vec<Seg<'v>>,
    out: Vec<Violation>,
}

impl<'v> Walk<'v> {
    fn shape(&self, name: &str) -> &'static Shape {
        // botocore.json holds every shape its inputs reach (the generator walks them all).
        &self.svc.shapes[name]
    }

    /// The path as AWS writes it: `productionVariants.1.member.variantName`.
    fn aws_path(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            if !out.is_empty() {
                out.push('.');
            }
            match seg {
                Seg::Member(m) => {
                    let mut chars = m.chars();
                    if let Some(first) = chars.next() {
                        out.extend(first.to_lowercase());
                        out.push_str(chars.as_str());
                    }
                }
                Seg::Index(i) => out.push_str(&format!("{}.member", i + 1)),
                Seg::Key(k) => out.push_str(k),
            }
        }
        out
    }

    /// The path as the request names it (`ProductionVariants.1.VariantName`), for type errors.
    fn request_path(&self) -> String {
        self.path
            .iter()
            .map(|seg| match seg {
                Seg::Member(m) | Seg::Key(m) => m.to_string(),
                Seg::Index(i) => (i + 1).to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    fn push(&mut self, value: Shown, rule: String) {
        let path = self.aws_path();
        self.out.push(Violation { value, path, rule });
    }

    fn wrong(&self, expected: &'static str) -> Result<(), WrongType> {
        if self.rules.types {
            Err(WrongType {
                path: self.request_path(),
                expected,
            })
        } else {
            // The handler reads the member and answers the type error its own way.
            Ok(())
        }
    }

    fn value(&mut self, shape_name: &str, v: &'v Value) -> Result<(), WrongType> {
        let shape = self.shape(shape_name);
        match shape.kind {
            Kind::Structure => {
                let Value::Object(obj) = v else {
                    return self.wrong("a structure");
                };
                for (member, target) in &shape.members {
                    match obj.get(member.as_str()).filter(|v| !v.is_null()) {
                        None => {
                            if self.rules.required && shape.required.contains(member) {
                                self.path.push(Seg::Member(member));
                                self.push(Shown::Null, "Member must not be null".into());
                                self.path.pop();
                            }
                        }
                        Some(field) => {
                            self.path.push(Seg::Member(member));
                            let r = self.value(target, field);
                            self.path.pop();
                            r?;
                        }
                    }
                }
                Ok(())
            }
            Kind::List => {
                let Value::Array(items) = v else {
                    return self.wrong("a list");
                };
                let member = self.shape(shape.member.as_deref().unwrap_or_default());
                self.length(shape, items.len(), || render_list(member, items));
                if member.is_scalar() {
                    let mut broken = false;
                    for (i, item) in items.iter().enumerate() {
                        self.path.push(Seg::Index(i));
                        let r = self.scalar_ok(member, item);
                        self.path.pop();
                        broken |= !r?;
                    }
                    if broken {
                        let rule = format!(
                            "Member must satisfy constraint: [{}]",
                            member.sentences(self.rules).join(", ")
                        );
                        self.push(render_list(member, items), rule);
                    }
                } else {
                    for (i, item) in items.iter().enumerate() {
                        self.path.push(Seg::Index(i));
                        let r = self.value(shape.member.as_deref().unwrap_or_default(), item);
                        self.path.pop();
                        r?;
                    }
                }
                Ok(())
            }
            Kind::Map => {
                let Value::Object(obj) = v else {
                    return self.wrong("a map");
                };
                let key = self.shape(shape.key.as_deref().unwrap_or_default());
                let value_name = shape.value.as_deref().unwrap_or_default();
                let value = self.shape(value_name);
                self.length(shape, obj.len(), || render_map(value, obj));
                let keys_broken = obj
                    .keys()
                    .any(|k| !key.scalar_violations(&Value::String(k.clone()), self.rules).is_empty());
                if keys_broken {
                    let rule = format!(
                        "Map keys must satisfy constraint: [{}]",
                        key.sentences(self.rules).join(", ")
                    );
                    self.push(render_map(value, obj), rule);
                }
                if value.is_scalar() {
                    let mut broken = false;
                    for (k, item) in obj {
                        self.path.push(Seg::Key(k));
                        let r = self.scalar_ok(value, item);
                        self.path.pop();
                        broken |= !r?;
                    }
                    if broken {
                        let rule = format!(
                            "Map value must satisfy constraint: [{}]",
                            value.sentences(self.rules).join(", ")
                        );
                        self.push(render_map(value, obj), rule);
                    }
                } else {
                    for (k, item) in obj {
                        self.path.push(Seg::Key(k));
                        let r = self.value(value_name, item);
                        self.path.pop();
                        r?;
                    }
                }
                Ok(())
            }
            _ => {
                if !type_ok(shape.kind, v) {
                    return self.wrong(expected(shape.kind));
                }
                let shown = render_scalar(shape, v);
                for rule in shape.scalar_violations(v, self.rules) {
                    self.push(shown.clone(), rule);
                }
                Ok(())
            }
        }
    }

    /// A collection's own length: `Member must have length …`.
    fn length(&mut self, shape: &Shape, n: usize, shown: impl Fn() -> Shown) {
        let n = n as f64;
        if let Some(min) = shape.min.filter(|m| n < *m) {
            self.push(
                shown(),
                format!("Member must have length greater than or equal to {}", min as i64),
            );
        }
        if let Some(max) = shape.max.filter(|m| n > *m) {
            self.push(
                shown(),
                format!("Member must have length less than or equal to {}", max as i64),
            );
        }
    }

    /// Whether a collection's scalar member keeps its constraints (its type is checked).
    fn scalar_ok(&mut self, shape: &Shape, v: &Value) -> Result<bool, WrongType> {
        if !type_ok(shape.kind, v) {
            self.wrong(expected(shape.kind))?;
            return Ok(true);
        }
        Ok(shape.scalar_violations(v, self.rules).is_empty())
    }
}

impl Shape {
    /// The constraints a scalar value breaks, in order: length, pattern, enum, range.
    fn scalar_violations(&self, v: &Value, rules: Rules) -> Vec<String> {
        let mut out = vec![];
        match v {
            Value::String(s) if matches!(self.kind, Kind::String | Kind::Blob) => {
                // Java's String.length(): UTF-16 code units.
                let len = s.encode_utf16().count() as f64;
                if let Some(min) = self.min.filter(|m| len < *m) {
                    out.push(format!(
                        "Member must have length greater than or equal to {}",
                        min as i64
                    ));
                }
                if let Some(max) = self.max.filter(|m| len > *m) {
                    out.push(format!("Member must have length less than or equal to {}", max as i64));
                }
                if let (Some(p), Some(m)) = (&self.pattern, &self.matcher)
                    && !m.is_match(s.as_str())
                {
                    out.push(format!("Member must satisfy regular expression pattern: {p}"));
                }
                if let Some(values) = self.values.as_ref().filter(|_| rules.enums)
                    && !values.iter().any(|e| e == s)
                {
                    out.push(enum_sentence(values));
                }
            }
            Value::Number(n) if matches!(self.kind, Kind::Integer | Kind::Long | Kind::Float | Kind::Double) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if let Some(min) = self.min.filter(|m| x < *m) {
                    out.push(format!(
                        "Member must have value greater than or equal to {}",
                        self.number(min)
                    ));
                }
                if let Some(max) = self.max.filter(|m| x > *m) {
                    out.push(format!(
                        "Member must have value less than or equal to {}",
                        self.number(max)
                    ));
                }
            }
            _ => {}
        }
        out
    }
}

fn type_ok(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::String | Kind::Blob => v.is_string(),
        // AWS's `integer` is 32 bits; a larger number is not one (a wrong type, as AWS answers).
        Kind::Integer => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        Kind::Long => v.as_i64().is_some(),
        Kind::Float | Kind::Double => v.is_number(),
        Kind::Boolean => v.is_boolean(),
        // epoch seconds (what botocore sends) or a date string
        Kind::Timestamp => v.is_number() || v.is_string(),
        Kind::Structure => v.is_object(),
        Kind::List => v.is_array(),
        Kind::Map => v.is_object(),
    }
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::String | Kind::Blob => "a string",
        Kind::Integer | Kind::Long => "an integer",
        Kind::Float | Kind::Double => "a number",
        Kind::Boolean => "a boolean",
        Kind::Timestamp => "a timestamp",
        Kind::Structure => "a structure",
        Kind::List => "a list",
        Kind::Map => "a map",
    }
}

/// A scalar as AWS shows it in a message (strings as they are, numbers as Java prints them).
fn scalar_text(shape: &Shape, v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if shape.is_float() => shape.number(n.as_f64().unwrap_or(f64::NAN)),
        other => other.to_string(),
    }
}

fn render_scalar(shape: &Shape, v: &Value) -> Shown {
    if shape.sensitive {
        Shown::Hidden
    } else {
        Shown::Text(scalar_text(shape, v))
    }
}

/// A list as Java's `List.toString` writes it: `[a, b]`; a list of structures is not shown.
fn render_list(member: &Shape, items: &[Value]) -> Shown {
    if items.is_empty() {
        return Shown::Text("[]".into());
    }
    if !member.is_scalar() || member.sensitive {
        return Shown::Hidden;
    }
    let parts: Vec<String> = items.iter().map(|v| scalar_text(member, v)).collect();
    Shown::Text(format!("[{}]", parts.join(", ")))
}

/// A map as Java's `Map.toString` writes it: `{k=v, k2=v2}`; a map of structures is not shown.
fn render_map(value: &Shape, obj: &serde_json::Map<String, Value>) -> Shown {
    if !value.is_scalar() || value.sensitive {
        return Shown::Hidden;
    }
    let parts: Vec<String> = obj
        .iter()
        .map(|(k, v)| format!("{k}={}", scalar_text(value, v)))
        .collect();
    Shown::Text(format!("{{{}}}", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(service: &str, op: &str, input: Value) -> Vec<String> {
        check(service, op, &input, Rules::ALL)
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect()
    }

    #[test]
    fn every_pattern_compiles_and_every_reference_resolves() {
        let m = model();
        assert_eq!(m.services.len(), 3);
        for (name, svc) in &m.services {
            for (op, input) in &svc.operations {
                assert!(svc.shapes.contains_key(input), "{name}.{op}: {input}");
            }
            for (sn, s) in &svc.shapes {
                assert_eq!(s.pattern.is_some(), s.matcher.is_some(), "{name}.{sn}");
                for r in s
                    .members
                    .iter()
                    .map(|(_, t)| t)
                    .chain(&s.member)
                    .chain(&s.key)
                    .chain(&s.value)
                {
                    assert!(svc.shapes.contains_key(r), "{name}.{sn} -> {r}");
                }
            }
        }
    }

    /// The table's operations are exactly those the API tables implement.
    #[test]
    fn the_model_covers_the_implemented_operations() {
        assert!(has_operation("sagemaker", "CreateEndpointConfig"));
        assert!(!has_operation("sagemaker", "CreateTrainingJob"));
        assert_eq!(
            operations("cloudwatch").unwrap(),
            [
                "DeleteAlarms",
                "DescribeAlarmHistory",
                "DescribeAlarms",
                "DescribeAlarmsForMetric",
                "DisableAlarmActions",
                "EnableAlarmActions",
                "GetMetricData",
                "GetMetricStatistics",
                "ListMetrics",
                "ListTagsForResource",
                "PutMetricAlarm",
                "SetAlarmState",
                "TagResource",
                "UntagResource"
            ]
        );
        assert!(operations("iam").is_none());
    }

    #[test]
    fn the_instance_type_enum_is_the_catalog() {
        let values = enum_values("sagemaker", "ProductionVariantInstanceType").unwrap();
        let mut catalog: Vec<&str> = crate::core::catalog::all().iter().map(|t| t.name.as_str()).collect();
        let mut model: Vec<&str> = values.iter().map(String::as_str).collect();
        catalog.sort_unstable();
        model.sort_unstable();
        assert_eq!(model, catalog);
    }

    #[test]
    fn java_numbers() {
        assert_eq!(java_double(0.0f64), "0.0");
        assert_eq!(java_double(1.0f64), "1.0");
        assert_eq!(java_double(-0.5f32), "-0.5");
        assert_eq!(java_double(0.1f32), "0.1");
        assert_eq!(java_double(12345678.0f64), "1.2345678E7");
        assert_eq!(java_double(0.0001f64), "1.0E-4");
    }

    #[test]
    fn patterns_match_whole_values_as_java_does() {
        let svc = &model().services["sagemaker"];
        let is = |shape: &str, v: &str| svc.shapes[shape].matcher.as_ref().unwrap().is_match(v);
        assert!(is("EndpointName", "a") && is("EndpointName", "my-ep-1") && is("EndpointName", "a--b"));
        for bad in ["", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is("EndpointName", bad), "{bad:?}");
        }
        assert!(is("RoleArn", "arn:aws:iam::123456789012:role/SageMakerRole"));
        assert!(is("RoleArn", "arn:aws-cn:iam::123456789012:role/path/to/R_1+=,.@-"));
        assert!(!is("RoleArn", "arn:aws:iam::12345678901:role/short-account"));
        assert!(!is("RoleArn", "arn:aws:iam::123456789012:user/not-a-role"));
        assert!(
            !is("RoleArn", "arn:aws:iam::١٢٣٤٥٦٧٨٩٠١٢:role/arabic-digits"),
            "\\d is ASCII in Java"
        );
        assert!(is("TagKey", "team name/é_1.2:x=y+z-w@q") && !is("TagKey", "bad#key") && !is("TagKey", "tab\tkey"));
        assert!(is("Url", "s3://bucket/key") && is("Url", "file:///tmp/weights") && !is("Url", "ftp://x/y"));
        assert!(is("ContainerImage", "python3 -m server --port 8080"));
        assert!(is("KmsKeyId", "arn:aws:kms:us-east-1:123456789012:key/abc-1") && !is("KmsKeyId", "alias with space"));
        assert!(is("AlarmName", "a b") && !is("AlarmName", "   ") && !is("AlarmName", "a\nb"));
        assert!(is("VersionedArnOrName", "my-package") && is("VersionedArnOrName", "my-package/3"));
        assert!(!is("VersionedArnOrName", "my-package-"));
        assert!(is("MetricsEndpointPath", "/metrics") && is("MetricsEndpointPath", "/a.b/c."));
        assert!(!is("MetricsEndpointPath", "/a/../b") && !is("MetricsEndpointPath", "/"));
        assert!(
            !is("PaginationToken", "line\nbreak"),
            "Java's . stops at line terminators"
        );
        let aas = &model().services["application-autoscaling"];
        let aas_is = |shape: &str, v: &str| aas.shapes[shape].matcher.as_ref().unwrap().is_match(v);
        assert!(aas_is("PolicyName", "my policy") && !aas_is("PolicyName", "é") && !aas_is("PolicyName", "tab\t"));
        assert!(aas_is("XmlString", "endpoint/é/variant/😀") && !aas_is("XmlString", "\u{1}"));
    }

    #[test]
    fn every_violation_is_reported_in_the_models_order() {
        let got = messages(
            "sagemaker",
            "CreateEndpointConfig",
            json!({
                "EndpointConfigName": "bad_name",
                "ProductionVariants": [
                    {"VariantName": "x".repeat(64), "InitialInstanceCount": 0,
                     "InstancePools": [{"InstanceType": "ml.m5.xlarge", "Priority": 6}]},
                    {"ModelName": "m", "InitialVariantWeight": -1},
                ],
                "ExecutionRoleArn": "role",
            }),
        );
        let long = "x".repeat(64);
        assert_eq!(
            got,
            [
                "Value 'bad_name' at 'endpointConfigName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}".to_string(),
                format!("Value '{long}' at 'productionVariants.1.member.variantName' failed to satisfy constraint: Member must have length less than or equal to 63"),
                format!("Value '{long}' at 'productionVariants.1.member.variantName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){{0,62}}"),
                "Value '0' at 'productionVariants.1.member.initialInstanceCount' failed to satisfy constraint: Member must have value greater than or equal to 1".to_string(),
                "Value '6' at 'productionVariants.1.member.instancePools.1.member.priority' failed to satisfy constraint: Member must have value less than or equal to 5".to_string(),
                "Value null at 'productionVariants.2.member.variantName' failed to satisfy constraint: Member must not be null".to_string(),
                "Value '-1.0' at 'productionVariants.2.member.initialVariantWeight' failed to satisfy constraint: Member must have value greater than or equal to 0.0".to_string(),
                "Value 'role' at 'executionRoleArn' failed to satisfy constraint: Member must have length greater than or equal to 20".to_string(),
                r"Value 'role' at 'executionRoleArn' failed to satisfy constraint: Member must satisfy regular expression pattern: ^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$".to_string(),
            ]
        );
    }

    #[test]
    fn collections_report_their_members_once() {
        let got = messages(
            "sagemaker",
            "DeleteTags",
            json!({"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m", "TagKeys": ["ok", "bad#", ""]}),
        );
        assert_eq!(
            got,
            [
                r"Value '[ok, bad#, ]' at 'tagKeys' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$]"
            ]
        );
        let got = messages(
            "sagemaker",
            "CreateModel",
            json!({"ModelName": "m", "PrimaryContainer": {"Environment": {"1X": "v", "OK": "w"}}}),
        );
        assert_eq!(
            got,
            [
                "Value '{1X=v, OK=w}' at 'primaryContainer.environment' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 1024, Member must have length greater than or equal to 0, Member must satisfy regular expression pattern: [a-zA-Z_][a-zA-Z0-9_]*]"
            ]
        );
        let tags: Vec<Value> = (0..51).map(|i| json!({"Key": format!("k{i}"), "Value": "v"})).collect();
        let got = messages(
            "sagemaker",
            "AddTags",
            json!({"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m", "Tags": tags}),
        );
        assert_eq!(
            got,
            ["Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50"]
        );
        let got = messages(
            "sagemaker",
            "CreateEndpointConfig",
            json!({"EndpointConfigName": "c", "ProductionVariants": []}),
        );
        assert_eq!(
            got,
            [
                "Value '[]' at 'productionVariants' failed to satisfy constraint: Member must have length greater than or equal to 1"
            ]
        );
    }

    /// The inference-component operations (issue 17) are checked as AWS checks them.
    #[test]
    fn inference_component_inputs_in_aws_words() {
        let got = messages(
            "sagemaker",
            "CreateInferenceComponent",
            json!({"InferenceComponentName": "ic_1", "EndpointName": "e", "VariantName": "AllTraffic",
                   "Specifications": [{"InstanceType": "ml.g5.2xlarge", "ModelName": "m",
                       "ComputeResourceRequirements": {"NumberOfCpuCoresRequired": 0.1,
                           "NumberOfAcceleratorDevicesRequired": 1, "MinMemoryRequiredInMb": 64}}],
                   "RuntimeConfig": {"CopyCount": -1}}),
        );
        assert_eq!(
            got,
            [
                "Value 'ic_1' at 'inferenceComponentName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?$",
                "Value '0.1' at 'specifications.1.member.computeResourceRequirements.numberOfCpuCoresRequired' failed to satisfy constraint: Member must have value greater than or equal to 0.25",
                "Value '64' at 'specifications.1.member.computeResourceRequirements.minMemoryRequiredInMb' failed to satisfy constraint: Member must have value greater than or equal to 128",
                "Value '-1' at 'runtimeConfig.copyCount' failed to satisfy constraint: Member must have value greater than or equal to 0",
            ]
        );
        let got = messages(
            "sagemaker",
            "UpdateInferenceComponentRuntimeConfig",
            json!({"InferenceComponentName": "ic"}),
        );
        assert_eq!(
            got,
            ["Value null at 'desiredRuntimeConfig' failed to satisfy constraint: Member must not be null"]
        );
        for op in [
            "CreateInferenceComponent",
            "DescribeInferenceComponent",
            "ListInferenceComponents",
            "UpdateInferenceComponent",
            "UpdateInferenceComponentRuntimeConfig",
            "DeleteInferenceComponent",
        ] {
            assert!(has_operation("sagemaker", op), "{op}");
        }
    }

    #[test]
    fn enums_list_the_models_values() {
        let got = messages(
            "application-autoscaling",
            "PutScalingPolicy",
            json!({"PolicyName": "p", "ServiceNamespace": "sagemaker", "ResourceId": "endpoint/e/variant/v",
                   "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "PolicyType": "Nope"}),
        );
        assert_eq!(
            got,
            [
                "Value 'Nope' at 'policyType' failed to satisfy constraint: Member must satisfy enum value set: [StepScaling, TargetTrackingScaling, PredictiveScaling]"
            ]
        );
        let cw = check(
            "cloudwatch",
            "GetMetricStatistics",
            &json!({"Statistics": ["Median"], "Namespace": ":bad"}),
            Rules {
                types: false,
                required: false,
                enums: false,
            },
        )
        .unwrap();
        assert_eq!(
            cw.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "Value ':bad' at 'namespace' failed to satisfy constraint: Member must satisfy regular expression pattern: [^:].*"
            ],
            "CloudWatch leaves enums to its handler"
        );
    }

    /// One generated member: what goes into the request (`None`: left out) and the violations
    /// it must produce, written independently of the model code.
    type Part = (Option<Value>, Vec<String>);

    fn at(value: &str, path: &str, rule: &str) -> String {
        format!("Value '{value}' at '{path}' failed to satisfy constraint: {rule}")
    }

    const NAME: &str = "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}";
    const ROLE: &str =
        r"Member must satisfy regular expression pattern: ^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$";

    fn config_name() -> impl proptest::strategy::Strategy<Value = Part> {
        use proptest::prelude::*;
        let long = "x".repeat(64);
        prop_oneof![
            Just((Some(json!("cfg-1")), vec![])),
            Just((
                Some(json!("bad_name")),
                vec![at("bad_name", "endpointConfigName", NAME)]
            )),
            Just((
                Some(json!(long)),
                vec![
                    at(
                        &long,
                        "endpointConfigName",
                        "Member must have length less than or equal to 63"
                    ),
                    at(&long, "endpointConfigName", NAME),
                ]
            )),
        ]
    }

    /// A variant at `i` (0-based): its members in the model's order.
    fn variant(i: usize) -> impl proptest::strategy::Strategy<Value = (Value, Vec<String>)> {
        use proptest::prelude::*;
        let p = format!("productionVariants.{}.member", i + 1);
        let name = prop_oneof![
            Just((Some(json!(format!("v{i}"))), vec![])),
            Just((
                None,
                vec![format!(
                    "Value null at '{p}.variantName' failed to satisfy constraint: Member must not be null"
                )]
            )),
            Just((Some(json!("-bad")), vec![at("-bad", &format!("{p}.variantName"), NAME)])),
        ];
        let count = prop_oneof![
            Just((None, vec![])),
            Just((Some(json!(1)), vec![])),
            Just((
                Some(json!(0)),
                vec![at(
                    "0",
                    &format!("{p}.initialInstanceCount"),
                    "Member must have value greater than or equal to 1"
                )]
            )),
        ];
        let priority = prop_oneof![
            Just((None, vec![])),
            Just((Some(json!([{"InstanceType": "ml.m5.xlarge", "Priority": 1}])), vec![])),
            Just((
                Some(json!([{"InstanceType": "ml.m5.xlarge", "Priority": 0}])),
                vec![at(
                    "0",
                    &format!("{p}.instancePools.1.member.priority"),
                    "Member must have value greater than or equal to 1"
                )]
            )),
            Just((
                Some(json!([{"InstanceType": "ml.m5.xlarge", "Priority": 6}])),
                vec![at(
                    "6",
                    &format!("{p}.instancePools.1.member.priority"),
                    "Member must have value less than or equal to 5"
                )]
            )),
        ];
        let weight = prop_oneof![
            Just((None, vec![])),
            Just((Some(json!(0.5)), vec![])),
            Just((
                Some(json!(-1)),
                vec![at(
                    "-1.0",
                    &format!("{p}.initialVariantWeight"),
                    "Member must have value greater than or equal to 0.0"
                )]
            )),
        ];
        (name, count, priority, weight).prop_map(|parts: (Part, Part, Part, Part)| {
            let members = [
                ("VariantName", parts.0),
                ("InitialInstanceCount", parts.1),
                ("InstancePools", parts.2),
                ("InitialVariantWeight", parts.3),
            ];
            let mut obj = serde_json::Map::new();
            let mut want = vec![];
            for (k, (value, w)) in members {
                if let Some(value) = value {
                    obj.insert(k.into(), value);
                }
                want.extend(w);
            }
            (Value::Object(obj), want)
        })
    }

    fn rest() -> impl proptest::strategy::Strategy<Value = (Part, Part, Part)> {
        use proptest::prelude::*;
        let tag_rule = r"Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$";
        let tags = prop_oneof![
            Just((None, vec![])),
            Just((Some(json!([{"Key": "team", "Value": "ml"}])), vec![])),
            Just((
                Some(json!([{"Key": "team", "Value": "ml"}, {"Key": "", "Value": "x"}])),
                vec![at(
                    "",
                    "tags.2.member.key",
                    "Member must have length greater than or equal to 1"
                )]
            )),
            Just((
                Some(json!([{"Key": "bad#", "Value": "x#"}])),
                vec![
                    at("bad#", "tags.1.member.key", tag_rule),
                    at("x#", "tags.1.member.value", tag_rule)
                ]
            )),
        ];
        let kms = prop_oneof![
            Just((None, vec![])),
            Just((Some(json!("key/1234")), vec![])),
            Just((
                Some(json!("bad key")),
                vec![at(
                    "bad key",
                    "kmsKeyId",
                    "Member must satisfy regular expression pattern: [a-zA-Z0-9:/_-]*"
                )]
            )),
        ];
        let role = prop_oneof![
            Just((None, vec![])),
            Just((Some(json!("arn:aws:iam::123456789012:role/R")), vec![])),
            Just((
                Some(json!("short")),
                vec![
                    at(
                        "short",
                        "executionRoleArn",
                        "Member must have length greater than or equal to 20"
                    ),
                    at("short", "executionRoleArn", ROLE),
                ]
            )),
            Just((
                Some(json!("arn:aws:iam::123456789012:user/bob")),
                vec![at("arn:aws:iam::123456789012:user/bob", "executionRoleArn", ROLE)]
            )),
        ];
        (tags, kms, role)
    }

    fn request() -> impl proptest::strategy::Strategy<Value = (Value, Vec<String>)> {
        use proptest::prelude::*;
        let variants = (1usize..=3).prop_flat_map(|n| (0..n).map(variant).collect::<Vec<_>>());
        (config_name(), variants, rest()).prop_map(|(name, variants, (tags, kms, role))| {
            let mut obj = serde_json::Map::new();
            let mut want = vec![];
            let mut add = |k: &str, (value, w): Part| {
                if let Some(value) = value {
                    obj.insert(k.into(), value);
                }
                want.extend(w);
            };
            add("EndpointConfigName", name);
            let (list, w): (Vec<Value>, Vec<Vec<String>>) = variants.into_iter().unzip();
            add("ProductionVariants", (Some(Value::Array(list)), w.concat()));
            add("Tags", tags);
            add("KmsKeyId", kms);
            add("ExecutionRoleArn", role);
            (Value::Object(obj), want)
        })
    }

    proptest::proptest! {
        /// Whatever mix of valid and broken members a request has, its message lists exactly
        /// the broken constraints, in the model's member order, with AWS's count and plural.
        #[test]
        fn the_message_lists_exactly_the_violated_constraints_in_order((input, want) in request()) {
            let got = check("sagemaker", "CreateEndpointConfig", &input, Rules::ALL).unwrap();
            let got: Vec<String> = got.iter().map(ToString::to_string).collect();
            proptest::prop_assert_eq!(&got, &want);
            let message = super::super::ValidationError::detected(
                &check("sagemaker", "CreateEndpointConfig", &input, Rules::ALL).unwrap(),
            );
            match want.len() {
                0 => proptest::prop_assert!(message.is_none()),
                1 => proptest::prop_assert_eq!(
                    message.unwrap().0,
                    format!("1 validation error detected: {}", want[0])
                ),
                n => proptest::prop_assert_eq!(
                    message.unwrap().0,
                    format!("{n} validation errors detected: {}", want.join("; "))
                ),
            }
        }
    }

    #[test]
    fn wrong_types_name_the_member_as_the_request_does() {
        let e = check(
            "sagemaker",
            "CreateEndpointConfig",
            &json!({"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "v", "InitialInstanceCount": "two"}]}),
            Rules::ALL,
        )
        .unwrap_err();
        assert_eq!(e.path, "ProductionVariants.1.InitialInstanceCount");
        assert_eq!(e.expected, "an integer");
        // unknown members are not the model's business
        assert!(messages("sagemaker", "DescribeModel", json!({"ModelName": "m", "Extra": 5})).is_empty());
    }
}
