//! The Kubernetes files of `packaging/kubernetes/` parse as YAML and hold
//! together: one driver name (the plugin's own) across the CSIDriver, the
//! example volume and the registrar; one socket across the plugin, the
//! registrar and the liveness probe; the service account the DaemonSet
//! runs as exists; the example's claim, volume and secret name each other;
//! every mount option of the example is one the plugin accepts.

use std::collections::HashMap;
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn docs(file: &str) -> Vec<Yaml> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/kubernetes")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn s(y: &Yaml) -> &str {
    y.as_str().unwrap_or_else(|| panic!("not a string: {y:?}"))
}

fn args(container: &Yaml) -> Vec<String> {
    container["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| s(a).to_string())
        .collect()
}

fn arg<'a>(args: &'a [String], name: &str) -> &'a str {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {args:?}"))
}

#[test]
fn the_kubernetes_files_hold_together() {
    let driver = bladefs_csi::DRIVER_NAME;
    let csidriver = docs("csidriver.yaml");
    assert_eq!(
        s(&of_kind(&csidriver, "CSIDriver")["metadata"]["name"]),
        driver
    );

    let node = docs("node.yaml");
    let ds = of_kind(&node, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let containers: HashMap<&str, &Yaml> = pod["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|c| (s(&c["name"]), c))
        .collect();
    let volumes: HashMap<&str, &Yaml> = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| (s(&v["name"]), v))
        .collect();
    // Where a container sees a host directory, by volume name.
    let mounted = |c: &Yaml, volume: &str| -> String {
        c["volumeMounts"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|m| s(&m["name"]) == volume)
            .map(|m| s(&m["mountPath"]).to_string())
            .unwrap_or_else(|| panic!("{volume} not mounted"))
    };
    let plugin = containers["bladefs-csi"];
    let socket = arg(&args(plugin), "--endpoint")
        .strip_prefix("unix://")
        .unwrap()
        .to_string();
    let plugin_dir = mounted(plugin, "plugin-dir");
    assert!(socket.starts_with(&format!("{plugin_dir}/")), "{socket}");
    let host_dir = s(&volumes["plugin-dir"]["hostPath"]["path"]);
    assert_eq!(
        host_dir,
        format!("/var/lib/kubelet/plugins/{driver}"),
        "kubelet's plugin directory of this driver"
    );
    let registrar = containers["node-driver-registrar"];
    let reg = args(registrar);
    assert_eq!(
        Path::new(&mounted(registrar, "plugin-dir")).join(
            Path::new(arg(&reg, "--csi-address"))
                .strip_prefix(&plugin_dir)
                .unwrap()
        ),
        Path::new(&socket)
    );
    assert_eq!(
        arg(&reg, "--kubelet-registration-path"),
        format!(
            "{host_dir}/{}",
            Path::new(&socket).file_name().unwrap().to_str().unwrap()
        ),
        "kubelet reaches the socket on the host"
    );
    let probe = containers["liveness-probe"];
    assert_eq!(arg(&args(probe), "--csi-address"), socket);
    let probe_args = args(probe);
    let port = arg(&probe_args, "--http-endpoint").trim_start_matches(':');
    let declared = plugin["ports"].as_vec().unwrap()[0]["containerPort"]
        .as_i64()
        .unwrap();
    assert_eq!(port, declared.to_string());
    assert_eq!(mounted(plugin, "pods-dir"), "/var/lib/kubelet/pods");
    // Daemons go to a cgroup of the host: under where the host's cgroup
    // tree is mounted, entered through the host's PID 1 (hostPID).
    let plugin_args = args(plugin);
    let cgroup = arg(&plugin_args, "--daemon-cgroup");
    assert_eq!(
        s(&volumes["host-cgroup"]["hostPath"]["path"]),
        "/sys/fs/cgroup"
    );
    assert!(
        cgroup.starts_with(&format!("{}/", mounted(plugin, "host-cgroup"))),
        "{cgroup}"
    );
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    // Every volume's metrics on the plugin's one port, declared by name.
    let metrics_port = arg(&plugin_args, "--metrics-addr")
        .rsplit(':')
        .next()
        .unwrap();
    let declared_metrics = plugin["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|p| s(&p["name"]) == "metrics")
        .and_then(|p| p["containerPort"].as_i64())
        .expect("a port named metrics");
    assert_eq!(metrics_port, declared_metrics.to_string());
    let rbac = docs("rbac.yaml");
    let account = of_kind(&rbac, "ServiceAccount");
    assert_eq!(
        s(&pod["serviceAccountName"]),
        s(&account["metadata"]["name"])
    );
    assert_eq!(
        s(&ds["metadata"]["namespace"]),
        s(&account["metadata"]["namespace"])
    );
    assert_eq!(
        s(&of_kind(&rbac, "Namespace")["metadata"]["name"]),
        s(&ds["metadata"]["namespace"])
    );

    let example = docs("example-static.yaml");
    let pv = of_kind(&example, "PersistentVolume");
    let csi = &pv["spec"]["csi"];
    assert_eq!(s(&csi["driver"]), driver);
    let secret = of_kind(&example, "Secret");
    assert_eq!(
        s(&csi["nodePublishSecretRef"]["name"]),
        s(&secret["metadata"]["name"])
    );
    for key in ["access_key_id", "secret_access_key"] {
        assert!(
            !secret["stringData"][key].is_badvalue(),
            "the secret holds {key}"
        );
    }
    let claim = of_kind(&example, "PersistentVolumeClaim");
    assert_eq!(s(&claim["spec"]["volumeName"]), s(&pv["metadata"]["name"]));
    let user = of_kind(&example, "Pod");
    assert_eq!(
        s(&user["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]),
        s(&claim["metadata"]["name"])
    );
    let attributes: HashMap<String, String> = csi["volumeAttributes"]
        .as_hash()
        .unwrap()
        .iter()
        .map(|(k, v)| (s(k).to_string(), s(v).to_string()))
        .collect();
    let flags: Vec<String> = pv["spec"]["mountOptions"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|f| s(f).to_string())
        .collect();
    bladefs_csi::options::volume(&attributes, &flags, false, Some("2000"))
        .expect("the example's volume is one the plugin accepts");
}
