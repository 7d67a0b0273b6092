//! What a volume may ask of bladefs: the PersistentVolume's
//! `volumeAttributes` (bucket, prefix, endpoint) and its `mountOptions`,
//! turned into a bladefs command line. Only options on the allow-list
//! pass, each value checked: nothing a volume says can name a local path,
//! a credential or a log, or smuggle a second option.

use std::collections::HashMap;

/// Options a volume may set, and what their value must be.
const ALLOWED: &[(&str, Value)] = &[
    ("allow-other", Value::Flag),
    ("uid", Value::Number),
    ("gid", Value::Number),
    ("file-mode", Value::Octal),
    ("dir-mode", Value::Octal),
    ("metadata-ttl", Value::Duration),
    ("no-close-to-open", Value::Flag),
    ("prefetch-memory-mib", Value::Number),
    ("upload-memory-mib", Value::Number),
    ("metadata-cache-mib", Value::Number),
    ("read-ahead-files", Value::Number),
    ("read-ahead-dirs", Value::Number),
    ("read-ahead-kb", Value::Number),
    ("region", Value::Word),
    ("sigv2", Value::Flag),
    ("virtual-hosted", Value::Flag),
    ("checksum-crc32c", Value::Flag),
    ("no-versions", Value::Flag),
    ("retries", Value::Number),
    ("timeout", Value::Duration),
    ("connect-timeout", Value::Duration),
    ("read-only", Value::Flag),
    ("ro", Value::Flag),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Flag,
    Number,
    Octal,
    /// Seconds, fractions allowed, or `never`.
    Duration,
    /// Letters, digits, `-` and `_`.
    Word,
}

impl Value {
    fn accepts(self, v: &str) -> bool {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        !v.is_empty()
            && v.len() <= 64
            && match self {
                Value::Flag => false,
                Value::Number => v.chars().all(|c| c.is_ascii_digit()),
                Value::Octal => v.chars().all(|c| ('0'..='7').contains(&c)),
                Value::Duration => v == "never" || v.parse::<f64>().is_ok_and(|s| s >= 0.0),
                Value::Word => v.chars().all(word),
            }
    }
}

/// A volume as bladefs mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `BUCKET` or `BUCKET:PREFIX`.
    pub source: String,
    pub endpoint: String,
    /// Options for bladefs's command line, `--name[=value]` each.
    pub args: Vec<String>,
}

/// The volume from its attributes, mount options and what the pod asks
/// (`read_only`, the group its files should belong to). Errors say what
/// is wrong, for an `InvalidArgument` status.
pub fn volume(
    attributes: &HashMap<String, String>,
    mount_flags: &[String],
    read_only: bool,
    group: Option<&str>,
) -> Result<Volume, String> {
    for key in attributes.keys() {
        // Kubernetes adds its own (csi.storage.k8s.io/...): not ours.
        if !key.contains('/') && !["bucket", "prefix", "endpoint"].contains(&key.as_str()) {
            return Err(format!(
                "unknown volume attribute {key:?} (known: bucket, prefix, endpoint)"
            ));
        }
    }
    let bucket = attributes
        .get("bucket")
        .filter(|b| !b.is_empty())
        .ok_or("volume attribute \"bucket\" is missing")?;
    if !bucket
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(format!("bucket {bucket:?} is not a bucket name"));
    }
    let endpoint = attributes
        .get("endpoint")
        .filter(|e| !e.is_empty())
        .ok_or("volume attribute \"endpoint\" is missing")?;
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        || endpoint.chars().any(|c| c.is_whitespace() || c == ',')
    {
        return Err(format!("endpoint {endpoint:?} is not an http(s) URL"));
    }
    let source = match attributes.get("prefix").map(|p| p.trim_matches('/')) {
        Some(p) if !p.is_empty() => {
            if p.chars().any(|c| c.is_control()) {
                return Err("prefix holds control characters".to_string());
            }
            format!("{bucket}:{p}")
        }
        _ => bucket.clone(),
    };
    // Each option once (bladefs refuses one given twice): a later value
    // replaces an earlier one, as in mount(8)'s option lists.
    let mut opts: Vec<(String, Option<String>)> = Vec::new();
    let set = |opts: &mut Vec<(String, Option<String>)>, name: &str, value: Option<&str>| {
        let value = value.map(str::to_string);
        match opts.iter_mut().find(|(n, _)| n == name) {
            Some(o) => o.1 = value,
            None => opts.push((name.to_string(), value)),
        }
    };
    let mut ro = read_only;
    for flag in mount_flags.iter().flat_map(|f| f.split(',')) {
        let flag = flag.trim().trim_start_matches("--");
        if flag.is_empty() {
            continue;
        }
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let name = name.replace('_', "-");
        let Some(&(_, kind)) = ALLOWED.iter().find(|(n, _)| *n == name) else {
            return Err(format!(
                "mount option {name:?} is not allowed (allowed: {})",
                ALLOWED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        match (kind, value) {
            (Value::Flag, None) if name == "ro" || name == "read-only" => ro = true,
            (Value::Flag, None) => set(&mut opts, &name, None),
            (Value::Flag, Some(_)) => return Err(format!("mount option {name} takes no value")),
            (_, Some(v)) if kind.accepts(v) => set(&mut opts, &name, Some(v)),
            (_, Some(v)) => return Err(format!("mount option {name}={v:?}: bad value")),
            (_, None) => return Err(format!("mount option {name} needs a value ({name}=...)")),
        }
    }
    if let Some(g) = group {
        if !Value::Number.accepts(g) {
            return Err(format!("volume mount group {g:?} is not a group id"));
        }
        // The pod's fsGroup owns the files (whatever gid the volume says),
        // and may write them unless the volume set modes of its own.
        set(&mut opts, "gid", Some(g));
        for (name, mode) in [("file-mode", "664"), ("dir-mode", "775")] {
            if !opts.iter().any(|(n, _)| n == name) {
                set(&mut opts, name, Some(mode));
            }
        }
        set(&mut opts, "allow-other", None);
    }
    if ro {
        set(&mut opts, "read-only", None);
    }
    let args = opts
        .into_iter()
        .map(|(name, value)| match value {
            Some(v) => format!("--{name}={v}"),
            None => format!("--{name}"),
        })
        .collect();
    Ok(Volume {
        source,
        endpoint: endpoint.clone(),
        args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_volume_becomes_a_command_line() {
        let a = attrs(&[
            ("bucket", "data"),
            ("prefix", "/team/a/"),
            ("endpoint", "http://10.0.0.1:80"),
            ("csi.storage.k8s.io/pod.name", "p"),
        ]);
        let flags = vec![
            "uid=1000,metadata-ttl=5,gid=7,dir-mode=750".to_string(),
            "--allow_other".to_string(),
            "metadata-ttl=9,ro".to_string(),
        ];
        let v = volume(&a, &flags, true, Some("2000")).unwrap();
        assert_eq!(v.source, "data:team/a");
        assert_eq!(v.endpoint, "http://10.0.0.1:80");
        // Each option once (bladefs refuses repeats): the later value, the
        // pod's group over the volume's, the volume's modes kept.
        assert_eq!(
            v.args,
            [
                "--uid=1000",
                "--metadata-ttl=9",
                "--gid=2000",
                "--dir-mode=750",
                "--allow-other",
                "--file-mode=664",
                "--read-only"
            ]
        );
    }

    #[test]
    fn what_is_not_allowed_is_refused_with_its_reason() {
        let ok = attrs(&[("bucket", "b"), ("endpoint", "http://e")]);
        let refused = |flags: &[&str]| {
            let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
            volume(&ok, &flags, false, None).unwrap_err()
        };
        assert!(refused(&["log-file=/etc/passwd"]).contains("not allowed"));
        assert!(refused(&["credentials-file=/x"]).contains("not allowed"));
        assert!(refused(&["write-back=/var"]).contains("not allowed"));
        assert!(refused(&["uid=0 --log-file=/x"]).contains("bad value"));
        assert!(refused(&["uid"]).contains("needs a value"));
        assert!(refused(&["sigv2=1"]).contains("takes no value"));
        assert!(refused(&["file-mode=999"]).contains("bad value"));
        let missing = volume(&attrs(&[("endpoint", "http://e")]), &[], false, None);
        assert!(missing.unwrap_err().contains("\"bucket\" is missing"));
        let bad = volume(
            &attrs(&[("bucket", "b"), ("endpoint", "file:///x")]),
            &[],
            false,
            None,
        );
        assert!(bad.unwrap_err().contains("not an http(s) URL"));
        let unknown = volume(
            &attrs(&[("bucket", "b"), ("endpoint", "http://e"), ("key", "x")]),
            &[],
            false,
            None,
        );
        assert!(unknown.unwrap_err().contains("unknown volume attribute"));
    }
}
