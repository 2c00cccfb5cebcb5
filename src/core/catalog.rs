//! The instance-type catalog: hardware (and, where known, price) for every SageMaker
//! `ProductionVariantInstanceType`.
//!
//! The data lives in `instance_types.csv` next to this file and is compiled in with
//! `include_str!`; it is parsed once, on first use. Rows follow the order of the botocore enum.
//! See `scripts/extract_instance_types.py` for how to diff the file against a newer botocore.
//!
//! CSV format: `#` lines and blank lines are ignored; the first remaining line is the header
//! `HEADER`; every other line is one instance type with exactly eight comma-separated fields.

use std::collections::HashMap;
use std::sync::LazyLock;

/// The raw catalog data.
const CSV: &str = include_str!("instance_types.csv");

/// The header line the CSV must carry (after any leading comment lines).
const HEADER: &str = "instance_type,vcpus,memory_gib,accelerator_kind,accelerator_model,\
accelerator_count,accelerator_memory_gib,price_usd_per_hour";

/// Number of comma-separated fields in every row.
const FIELDS: usize = 8;

/// What accelerator an instance type carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum AcceleratorKind {
    /// NVIDIA GPUs (CUDA devices).
    NvidiaGpu,
    /// AWS Inferentia or Inferentia2 chips (Neuron devices).
    Inferentia,
    /// AWS Trainium or Trainium2 chips (Neuron devices).
    Trainium,
}

/// The accelerators fitted to one instance type.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Accelerator {
    /// Which family of accelerator.
    pub kind: AcceleratorKind,
    /// The device model, e.g. `"L40S"`, `"H100"`, `"Inferentia2"`.
    pub model: String,
    /// How many devices the instance carries (always at least 1).
    pub count: u32,
    /// Memory of ONE device in GiB (nominal, e.g. 24 for an A10G, 141 for an H200).
    pub memory_gib_per_device: f64,
}

/// Hardware and price of one SageMaker instance type.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTypeSpec {
    /// The SageMaker name, e.g. `"ml.g6.2xlarge"`.
    pub name: String,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Host memory in GiB.
    pub memory_gib: f64,
    /// The accelerators, or `None` for a CPU-only type.
    pub accelerator: Option<Accelerator>,
    /// Public SageMaker real-time inference on-demand price in us-east-1, USD per hour;
    /// `None` where the catalog does not know it.
    pub price_usd_per_hour: Option<f64>,
}

impl InstanceTypeSpec {
    /// Number of accelerator devices (0 for a CPU-only type).
    pub fn accelerator_count(&self) -> u32 {
        self.accelerator.as_ref().map_or(0, |a| a.count)
    }

    /// Whether the type carries NVIDIA GPUs.
    pub fn is_gpu(&self) -> bool {
        self.accelerator
            .as_ref()
            .is_some_and(|a| a.kind == AcceleratorKind::NvidiaGpu)
    }
}

/// The parsed catalog, in file order. Panics on first use if the embedded CSV is malformed
/// (the unit tests below make sure it is not).
static CATALOG: LazyLock<Vec<InstanceTypeSpec>> =
    LazyLock::new(|| parse_catalog(CSV).unwrap_or_else(|e| panic!("core/instance_types.csv is malformed: {e}")));

/// Name → position in [`CATALOG`].
static INDEX: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
    all()
        .iter()
        .enumerate()
        .map(|(i, spec)| (spec.name.as_str(), i))
        .collect()
});

/// All types, in the file's order.
pub fn all() -> &'static [InstanceTypeSpec] {
    CATALOG.as_slice()
}

/// Look up by exact name (e.g. "ml.g6.2xlarge").
pub fn lookup(name: &str) -> Option<&'static InstanceTypeSpec> {
    INDEX.get(name).map(|&i| &all()[i])
}

/// Parses the whole CSV; the error names the offending line (1-based).
fn parse_catalog(src: &str) -> Result<Vec<InstanceTypeSpec>, String> {
    let mut specs: Vec<InstanceTypeSpec> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut header_seen = false;
    for (idx, raw) in src.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !header_seen {
            if line != HEADER {
                return Err(format!("line {line_no}: expected header `{HEADER}`, found `{line}`"));
            }
            header_seen = true;
            continue;
        }
        let spec = parse_row(line).map_err(|e| format!("line {line_no} (`{line}`): {e}"))?;
        if let Some(first) = seen.insert(spec.name.clone(), line_no) {
            return Err(format!(
                "line {line_no}: duplicate instance type {} (first on line {first})",
                spec.name
            ));
        }
        specs.push(spec);
    }
    if !header_seen {
        return Err("no header line".to_owned());
    }
    Ok(specs)
}

/// Parses one data row (already trimmed, not a comment).
fn parse_row(line: &str) -> Result<InstanceTypeSpec, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if fields.len() != FIELDS {
        return Err(format!("expected {FIELDS} fields, found {}", fields.len()));
    }
    let name = fields[0];
    if !name.starts_with("ml.") || name.len() <= 3 || name.contains(char::is_whitespace) {
        return Err(format!("bad instance type name `{name}`"));
    }
    let vcpus: u32 = parse_num(fields[1], "vcpus")?;
    if vcpus == 0 {
        return Err("vcpus must be positive".to_owned());
    }
    let memory_gib = parse_positive_f64(fields[2], "memory_gib")?;
    let kind = match fields[3] {
        "none" => None,
        "nvidia" => Some(AcceleratorKind::NvidiaGpu),
        "inferentia" => Some(AcceleratorKind::Inferentia),
        "trainium" => Some(AcceleratorKind::Trainium),
        other => return Err(format!("unknown accelerator_kind `{other}`")),
    };
    let model = fields[4];
    let count: u32 = parse_num(fields[5], "accelerator_count")?;
    let accelerator = match kind {
        None => {
            let memory: f64 = parse_num(fields[6], "accelerator_memory_gib")?;
            if !model.is_empty() || count != 0 || memory != 0.0 {
                return Err("accelerator_kind none needs an empty model, count 0 and memory 0".to_owned());
            }
            None
        }
        Some(kind) => {
            if model.is_empty() {
                return Err("accelerator_model is empty".to_owned());
            }
            if count == 0 {
                return Err("accelerator_count must be positive".to_owned());
            }
            Some(Accelerator {
                kind,
                model: model.to_owned(),
                count,
                memory_gib_per_device: parse_positive_f64(fields[6], "accelerator_memory_gib")?,
            })
        }
    };
    let price_usd_per_hour = match fields[7] {
        "" => None,
        p => Some(parse_positive_f64(p, "price_usd_per_hour")?),
    };
    Ok(InstanceTypeSpec {
        name: name.to_owned(),
        vcpus,
        memory_gib,
        accelerator,
        price_usd_per_hour,
    })
}

/// Parses a number field, naming the column in the error.
fn parse_num<T: std::str::FromStr>(field: &str, column: &str) -> Result<T, String> {
    field
        .parse()
        .map_err(|_| format!("{column}: `{field}` is not a valid number"))
}

/// Parses a finite, strictly positive `f64` field.
fn parse_positive_f64(field: &str, column: &str) -> Result<f64, String> {
    let v: f64 = parse_num(field, column)?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{column}: `{field}` must be a positive number"))
    }
}

/// The `Environment` key with which a model declares how many accelerator devices it needs.
pub const MIN_ACCELERATORS_ENV: &str = "SPILLWAY_MIN_ACCELERATORS";
/// The `Environment` key with which a model declares the memory it needs on each accelerator
/// device, in GiB (as the catalog's `accelerator_memory_gib`, which is per device).
pub const MIN_ACCELERATOR_MEMORY_ENV: &str = "SPILLWAY_MIN_ACCELERATOR_MEMORY_GB";

/// What a model declares it needs of an instance type (its container's `Environment`):
/// the fit check refuses every pool whose type cannot hold it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ModelNeeds {
    /// At least this many accelerator devices (`SPILLWAY_MIN_ACCELERATORS`).
    pub min_accelerators: Option<u32>,
    /// At least this much memory on each device, GiB (`SPILLWAY_MIN_ACCELERATOR_MEMORY_GB`).
    pub min_accelerator_memory_gib: Option<f64>,
}

/// A malformed fit declaration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NeedsError {
    /// `SPILLWAY_MIN_ACCELERATORS` is not a positive integer.
    #[error(
        "Environment {MIN_ACCELERATORS_ENV} must be a positive integer (a number of accelerator devices), not {0:?}"
    )]
    Accelerators(String),
    /// `SPILLWAY_MIN_ACCELERATOR_MEMORY_GB` is not a positive number.
    #[error(
        "Environment {MIN_ACCELERATOR_MEMORY_ENV} must be a positive number (GiB of memory per accelerator device), not {0:?}"
    )]
    Memory(String),
}

impl ModelNeeds {
    /// Reads the declaration from a container's `Environment` (absent keys: no need).
    pub fn from_environment<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, NeedsError> {
        let mut needs = Self::default();
        for (k, v) in env {
            match k {
                MIN_ACCELERATORS_ENV => {
                    let t = v.trim();
                    let n = (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| t.parse::<u32>().ok())
                        .flatten()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| NeedsError::Accelerators(v.to_string()))?;
                    needs.min_accelerators = Some(n);
                }
                MIN_ACCELERATOR_MEMORY_ENV => {
                    let t = v.trim();
                    // Digits with at most one decimal point: no exponents, signs, inf or NaN.
                    let plain = !t.is_empty()
                        && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                        && t.bytes().filter(|b| *b == b'.').count() <= 1
                        && t.bytes().any(|b| b.is_ascii_digit());
                    let g = plain
                        .then(|| t.parse::<f64>().ok())
                        .flatten()
                        .filter(|g| g.is_finite() && *g > 0.0)
                        .ok_or_else(|| NeedsError::Memory(v.to_string()))?;
                    needs.min_accelerator_memory_gib = Some(g);
                }
                _ => {}
            }
        }
        Ok(needs)
    }

    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.min_accelerators.is_none() && self.min_accelerator_memory_gib.is_none()
    }

    /// Why `spec` cannot hold the model (`None`: it can): the need and what the type has.
    pub fn shortfall(&self, spec: &InstanceTypeSpec) -> Option<String> {
        let has = match &spec.accelerator {
            Some(a) => format!(
                "{} has {} x {} with {} GiB each",
                spec.name,
                a.count,
                a.model,
                fmt_gib(a.memory_gib_per_device)
            ),
            None => format!("{} has no accelerators", spec.name),
        };
        let (count, per_device) = spec
            .accelerator
            .as_ref()
            .map_or((0, 0.0), |a| (a.count, a.memory_gib_per_device));
        let mut why = vec![];
        if let Some(n) = self.min_accelerators
            && count < n
        {
            why.push(format!(
                "at least {n} accelerator device{} ({MIN_ACCELERATORS_ENV}={n})",
                if n == 1 { "" } else { "s" }
            ));
        }
        if let Some(g) = self.min_accelerator_memory_gib
            && per_device < g
        {
            why.push(format!(
                "at least {} GiB of memory per accelerator device ({MIN_ACCELERATOR_MEMORY_ENV}={})",
                fmt_gib(g),
                fmt_gib(g)
            ));
        }
        (!why.is_empty()).then(|| format!("it needs {}; {has}", why.join(" and ")))
    }
}

/// GiB without a needless `.0`.
fn fmt_gib(g: f64) -> String {
    if g.fract() == 0.0 && g < 1e15 {
        format!("{}", g as u64)
    } else {
        format!("{g}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_declarations_are_read_and_checked() {
        let needs = |pairs: &[(&str, &str)]| ModelNeeds::from_environment(pairs.iter().copied());
        let n = needs(&[
            (MIN_ACCELERATORS_ENV, "2"),
            (MIN_ACCELERATOR_MEMORY_ENV, "40"),
            ("OTHER", "x"),
        ])
        .unwrap();
        assert_eq!(n.min_accelerators, Some(2));
        assert_eq!(n.min_accelerator_memory_gib, Some(40.0));
        assert!(needs(&[]).unwrap().is_empty());
        assert_eq!(
            n.shortfall(get("ml.g6.2xlarge")).unwrap(),
            "it needs at least 2 accelerator devices (SPILLWAY_MIN_ACCELERATORS=2) and at least 40 GiB of memory \
             per accelerator device (SPILLWAY_MIN_ACCELERATOR_MEMORY_GB=40); ml.g6.2xlarge has 1 x L4 with 24 GiB each"
        );
        assert_eq!(
            n.shortfall(get("ml.m5.xlarge")).unwrap(),
            "it needs at least 2 accelerator devices (SPILLWAY_MIN_ACCELERATORS=2) and at least 40 GiB of memory \
             per accelerator device (SPILLWAY_MIN_ACCELERATOR_MEMORY_GB=40); ml.m5.xlarge has no accelerators"
        );
        let one = needs(&[(MIN_ACCELERATORS_ENV, "1"), (MIN_ACCELERATOR_MEMORY_ENV, "22.5")]).unwrap();
        assert_eq!(one.shortfall(get("ml.g6.2xlarge")), None, "1 x 24 GiB holds 1 x 22.5");
        assert_eq!(
            one.shortfall(get("ml.c5.xlarge")).unwrap(),
            "it needs at least 1 accelerator device (SPILLWAY_MIN_ACCELERATORS=1) and at least 22.5 GiB of memory \
             per accelerator device (SPILLWAY_MIN_ACCELERATOR_MEMORY_GB=22.5); ml.c5.xlarge has no accelerators"
        );
        for bad in ["0", "-1", "1.5", "", " ", "two", "+3", "99999999999"] {
            assert_eq!(
                needs(&[(MIN_ACCELERATORS_ENV, bad)]),
                Err(NeedsError::Accelerators(bad.into())),
                "{bad:?}"
            );
        }
        for bad in ["0", "0.0", "-4", "inf", "NaN", "1e3", "", ".", "1.2.3", "40GB"] {
            assert_eq!(
                needs(&[(MIN_ACCELERATOR_MEMORY_ENV, bad)]),
                Err(NeedsError::Memory(bad.into())),
                "{bad:?}"
            );
        }
        assert!(
            NeedsError::Memory("x".into())
                .to_string()
                .starts_with("Environment SPILLWAY_MIN_ACCELERATOR_MEMORY_GB must be a positive number")
        );
    }

    proptest::proptest! {
        /// A type holds a declared need exactly when it has enough devices with enough memory
        /// each, for every catalog type; any string is either read or refused, never a panic.
        #[test]
        fn the_fit_check_agrees_with_the_catalog(
            count in proptest::option::of(1u32..20),
            mem in proptest::option::of(1u32..200),
            idx in 0usize..10_000,
            junk in "\\PC{0,12}",
        ) {
            let all = all();
            let spec = &all[idx % all.len()];
            let c = count.map(|c| c.to_string());
            let m = mem.map(|m| m.to_string());
            let mut env = vec![];
            if let Some(c) = &c { env.push((MIN_ACCELERATORS_ENV, c.as_str())); }
            if let Some(m) = &m { env.push((MIN_ACCELERATOR_MEMORY_ENV, m.as_str())); }
            let needs = ModelNeeds::from_environment(env).unwrap();
            let (have_c, have_m) = spec.accelerator.as_ref().map_or((0, 0.0), |a| (a.count, a.memory_gib_per_device));
            let fits = count.is_none_or(|c| have_c >= c) && mem.is_none_or(|m| have_m >= m as f64);
            proptest::prop_assert_eq!(needs.shortfall(spec).is_none(), fits);
            if let Some(why) = needs.shortfall(spec) {
                proptest::prop_assert!(why.contains(&spec.name));
            }
            for key in [MIN_ACCELERATORS_ENV, MIN_ACCELERATOR_MEMORY_ENV] {
                match ModelNeeds::from_environment([(key, junk.as_str())]) {
                    Ok(n) => proptest::prop_assert!(!n.is_empty()),
                    Err(e) => proptest::prop_assert!(e.to_string().contains(key)),
                }
            }
        }
    }
    use std::collections::HashSet;

    /// Size of the `ProductionVariantInstanceType` enum in botocore 1.44.8
    /// (`botocore/data/sagemaker/2017-07-24/service-2.json.gz`). To regenerate:
    /// `pip install botocore==<ver>` and run `python3 scripts/extract_instance_types.py | wc -l`;
    /// diff the names against the CSV as described in that script's docstring.
    const BOTOCORE_1_44_8_ENUM_COUNT: usize = 277;

    /// `ml.g6e.2xlarge` → `g6e`, `ml.p6-b200.48xlarge` → `p6-b200`.
    fn family(name: &str) -> &str {
        name.strip_prefix("ml.")
            .and_then(|rest| rest.split('.').next())
            .unwrap_or_else(|| panic!("bad name {name}"))
    }

    fn get(name: &str) -> &'static InstanceTypeSpec {
        lookup(name).unwrap_or_else(|| panic!("{name} missing from the catalog"))
    }

    #[test]
    fn every_row_parses() {
        // Parse directly so a malformed row fails here with its line number rather than as a
        // LazyLock panic somewhere else.
        let specs = parse_catalog(CSV).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(specs.len(), all().len());
        assert_eq!(specs.as_slice(), all());
    }

    #[test]
    fn no_duplicate_names_and_lookup_finds_every_row() {
        let mut names = HashSet::new();
        for spec in all() {
            assert!(names.insert(spec.name.as_str()), "duplicate {}", spec.name);
            assert_eq!(lookup(&spec.name), Some(spec));
        }
        assert_eq!(lookup("ml.nonexistent.xlarge"), None);
        assert_eq!(lookup("g6.2xlarge"), None, "lookup is by exact ml. name");
        assert_eq!(lookup(" ml.g6.2xlarge"), None);
    }

    #[test]
    fn count_matches_botocore_enum() {
        assert_eq!(all().len(), BOTOCORE_1_44_8_ENUM_COUNT);
    }

    #[test]
    fn spot_checks() {
        let g6e = get("ml.g6e.2xlarge");
        assert_eq!((g6e.vcpus, g6e.memory_gib), (8, 64.0));
        assert_eq!(
            g6e.accelerator,
            Some(Accelerator {
                kind: AcceleratorKind::NvidiaGpu,
                model: "L40S".to_owned(),
                count: 1,
                memory_gib_per_device: 48.0,
            })
        );
        assert!(g6e.is_gpu());
        assert_eq!(g6e.accelerator_count(), 1);

        let p5 = get("ml.p5.48xlarge");
        assert_eq!((p5.vcpus, p5.memory_gib), (192, 2048.0));
        let acc = p5.accelerator.as_ref().expect("p5 has GPUs");
        assert_eq!(acc.kind, AcceleratorKind::NvidiaGpu);
        assert_eq!(acc.model, "H100");
        assert_eq!((acc.count, acc.memory_gib_per_device), (8, 80.0));
        assert_eq!(p5.accelerator_count(), 8);

        let m5 = get("ml.m5.xlarge");
        assert_eq!((m5.vcpus, m5.memory_gib), (4, 16.0));
        assert_eq!(m5.accelerator, None);
        assert_eq!(m5.accelerator_count(), 0);
        assert!(!m5.is_gpu());
        assert_eq!(m5.price_usd_per_hour, Some(0.23));

        let inf2 = get("ml.inf2.xlarge");
        assert_eq!((inf2.vcpus, inf2.memory_gib), (4, 16.0));
        let acc = inf2.accelerator.as_ref().expect("inf2 has an Inferentia2");
        assert_eq!(acc.kind, AcceleratorKind::Inferentia);
        assert_eq!(acc.model, "Inferentia2");
        assert_eq!((acc.count, acc.memory_gib_per_device), (1, 32.0));
        assert!(!inf2.is_gpu());

        let t2 = get("ml.t2.medium");
        assert_eq!((t2.vcpus, t2.memory_gib), (2, 4.0));
        assert_eq!(t2.accelerator, None);

        // A few more that are easy to get wrong.
        let g5_12 = get("ml.g5.12xlarge");
        assert_eq!(g5_12.accelerator_count(), 4);
        assert_eq!(get("ml.g5.16xlarge").accelerator_count(), 1);
        assert_eq!(get("ml.g4dn.12xlarge").accelerator_count(), 4);
        assert_eq!(get("ml.g7e.12xlarge").accelerator_count(), 2);
        let p4d = get("ml.p4d.24xlarge").accelerator.as_ref().unwrap();
        let p4de = get("ml.p4de.24xlarge").accelerator.as_ref().unwrap();
        assert_eq!((p4d.memory_gib_per_device, p4de.memory_gib_per_device), (40.0, 80.0));
        let p5en = get("ml.p5en.48xlarge").accelerator.as_ref().unwrap();
        assert_eq!((p5en.model.as_str(), p5en.memory_gib_per_device), ("H200", 141.0));
        let trn1 = get("ml.trn1.32xlarge");
        assert_eq!(
            (trn1.vcpus, trn1.memory_gib, trn1.accelerator_count()),
            (128, 512.0, 16)
        );
        assert_eq!(trn1.accelerator.as_ref().unwrap().kind, AcceleratorKind::Trainium);
        assert_eq!(get("ml.c4.large").memory_gib, 3.75);
        assert_eq!(get("ml.p5.4xlarge").accelerator_count(), 1);
    }

    #[test]
    fn required_families_present() {
        // Families the brief requires plus every other family in the botocore 1.44.8 enum.
        // (t3, m7g, g4ad and g5g are not ProductionVariantInstanceType values in 1.44.8.)
        let families: HashSet<&str> = all().iter().map(|s| family(&s.name)).collect();
        let required = "t2 m4 m5 m5d m6i m7i c4 c5 c5d c6i c7i c6in r5 r5d r6i r7i \
            m6g m6gd c6g c6gd c6gn r6g r6gd c7g r7gd c8g m8g r8g \
            g4dn g5 g6 g6e g7 g7e p2 p3 p4d p4de p5 p5e p5en p6-b200 p6-b300 p6e-gb200 \
            inf1 inf2 trn1 trn1n trn2 dl1";
        for fam in required.split_whitespace() {
            assert!(families.contains(fam), "family {fam} missing");
        }
        // The complete families must carry every size.
        let g_sizes = "xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge";
        for (fam, sizes) in [
            ("t2", "medium large xlarge 2xlarge"),
            ("m5", "large xlarge 2xlarge 4xlarge 12xlarge 24xlarge"),
            ("c5", "large xlarge 2xlarge 4xlarge 9xlarge 18xlarge"),
            ("r5", "large xlarge 2xlarge 4xlarge 12xlarge 24xlarge"),
            (
                "m6i",
                "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 32xlarge",
            ),
            (
                "c6i",
                "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 32xlarge",
            ),
            (
                "r6i",
                "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 32xlarge",
            ),
            (
                "m7i",
                "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge",
            ),
            (
                "c7i",
                "large xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge 24xlarge 48xlarge",
            ),
            ("g4dn", "xlarge 2xlarge 4xlarge 8xlarge 12xlarge 16xlarge"),
            ("g5", g_sizes),
            ("g6", g_sizes),
            ("g6e", g_sizes),
            ("g7e", "2xlarge 4xlarge 8xlarge 12xlarge 24xlarge 48xlarge"),
            ("inf2", "xlarge 8xlarge 24xlarge 48xlarge"),
            ("trn1", "2xlarge 32xlarge"),
        ] {
            for size in sizes.split_whitespace() {
                let name = format!("ml.{fam}.{size}");
                assert!(lookup(&name).is_some(), "{name} missing");
            }
        }
    }

    #[test]
    fn accelerators_are_consistent() {
        for spec in all() {
            if let Some(acc) = &spec.accelerator {
                assert!(acc.count > 0, "{}: zero accelerators", spec.name);
                assert!(
                    acc.memory_gib_per_device > 0.0,
                    "{}: accelerator memory must be > 0",
                    spec.name
                );
                assert!(!acc.model.is_empty(), "{}: empty model", spec.name);
            }
            assert_eq!(spec.accelerator_count() > 0, spec.accelerator.is_some());
        }
        // Every type of a GPU family is a GPU type with the same per-device memory and model.
        let gpu_families = "g4dn g5 g6 g6e g7 g7e p2 p3 p4d p4de p5 p5e p5en p6-b200 p6-b300 p6e-gb200";
        for fam in gpu_families.split_whitespace() {
            let members: Vec<_> = all().iter().filter(|s| family(&s.name) == fam).collect();
            assert!(!members.is_empty(), "{fam} missing");
            let first = members[0].accelerator.as_ref().expect("GPU family");
            for spec in members {
                assert!(spec.is_gpu(), "{} should be a GPU type", spec.name);
                let acc = spec.accelerator.as_ref().unwrap();
                assert!(acc.memory_gib_per_device > 0.0, "{}", spec.name);
                assert_eq!(acc.model, first.model, "{}", spec.name);
                assert_eq!(acc.memory_gib_per_device, first.memory_gib_per_device, "{}", spec.name);
            }
        }
        for (fam, kind) in [
            ("inf1", AcceleratorKind::Inferentia),
            ("inf2", AcceleratorKind::Inferentia),
            ("trn1", AcceleratorKind::Trainium),
            ("trn1n", AcceleratorKind::Trainium),
            ("trn2", AcceleratorKind::Trainium),
        ] {
            for spec in all().iter().filter(|s| family(&s.name) == fam) {
                assert_eq!(spec.accelerator.as_ref().map(|a| a.kind), Some(kind), "{}", spec.name);
            }
        }
    }

    #[test]
    fn prices_are_plausible_where_known() {
        for spec in all() {
            if let Some(p) = spec.price_usd_per_hour {
                assert!(p > 0.0 && p < 1000.0, "{}: implausible price {p}", spec.name);
            }
        }
        // In these simple families (no odd GPU/CPU splits) a larger size never costs less.
        for fam in ["t2", "m5", "c5", "inf2"] {
            let mut priced: Vec<_> = all()
                .iter()
                .filter(|s| family(&s.name) == fam)
                .map(|s| (s.vcpus, s.price_usd_per_hour.expect("priced family")))
                .collect();
            priced.sort_by_key(|&(v, _)| v);
            for pair in priced.windows(2) {
                assert!(pair[0].1 <= pair[1].1, "{fam}: price not monotone in size");
            }
        }
    }

    #[test]
    fn malformed_rows_are_rejected() {
        let ok = format!("# c\n{HEADER}\nml.x.large,2,4,none,,0,0,\n");
        assert_eq!(parse_catalog(&ok).map(|v| v.len()), Ok(1));
        for bad in [
            "ml.x.large,2,4,none,,0,0",       // 7 fields
            "ml.x.large,2,4,none,,0,0,,",     // 9 fields
            "x.large,2,4,none,,0,0,",         // no ml. prefix
            "ml.x.large,0,4,none,,0,0,",      // zero vCPUs
            "ml.x.large,two,4,none,,0,0,",    // not a number
            "ml.x.large,2,-4,none,,0,0,",     // negative memory
            "ml.x.large,2,4,amd,Radeon,1,8,", // unknown kind
            "ml.x.large,2,4,none,T4,1,16,",   // none with an accelerator
            "ml.x.large,2,4,nvidia,,1,16,",   // empty model
            "ml.x.large,2,4,nvidia,T4,0,16,", // zero count
            "ml.x.large,2,4,nvidia,T4,1,0,",  // zero device memory
            "ml.x.large,2,4,none,,0,0,free",  // bad price
            "ml.x.large,2,4,none,,0,0,0",     // zero price
        ] {
            let src = format!("{HEADER}\n{bad}\n");
            assert!(parse_catalog(&src).is_err(), "accepted `{bad}`");
        }
        let dup = format!("{HEADER}\nml.x.large,2,4,none,,0,0,\nml.x.large,2,4,none,,0,0,\n");
        assert!(parse_catalog(&dup).unwrap_err().contains("duplicate"));
        assert!(parse_catalog("ml.x.large,2,4,none,,0,0,\n").is_err(), "missing header");
        assert!(parse_catalog("# only a comment\n").is_err());
    }

    #[test]
    fn serializes_camel_case() {
        let v = serde_json::to_value(get("ml.g6e.2xlarge")).expect("serializes");
        assert_eq!(v["name"], "ml.g6e.2xlarge");
        assert_eq!(v["vcpus"], 8);
        assert_eq!(v["memoryGib"], 64.0);
        assert_eq!(v["accelerator"]["kind"], "NvidiaGpu");
        assert_eq!(v["accelerator"]["memoryGibPerDevice"], 48.0);
        assert!(v.get("priceUsdPerHour").is_some());
        let cpu = serde_json::to_value(get("ml.c6i.large")).expect("serializes");
        assert!(cpu["accelerator"].is_null());
    }
}
