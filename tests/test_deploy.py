"""The deployment files, checked by the tools that run them: promtool for the alert rules."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import REPO, missing_prerequisite
from live import LiveCommand

RULES = REPO / "deploy" / "prometheus" / "spawnwatch-rules.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        missing_prerequisite("promtool is not installed (sudo make setup installs prometheus)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=RULES.parent)


def test_the_alert_rules_are_valid() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alert_rules_fire_as_their_unit_tests_say() -> None:
    tested = promtool("test", "rules", "spawnwatch-rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


UNIT = REPO / "deploy" / "systemd" / "spawnwatch.service"


def systemd_root(tmp_path) -> str:
    """A filesystem root holding systemd's own units, the unit, and an executable where it
    runs spawnwatch from: what `systemd-analyze --root` needs to judge the unit offline."""
    if shutil.which("systemd-analyze") is None:
        missing_prerequisite("systemd-analyze is not installed (sudo make setup installs systemd)")
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    executable = unit_setting("ExecStart").split()[0]
    (root / executable.lstrip("/")).parent.mkdir(parents=True)
    (root / executable.lstrip("/")).write_text("#!/bin/sh\n")
    (root / executable.lstrip("/")).chmod(0o755)
    return str(root)


def unit_setting(key: str) -> str:
    (value,) = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith(f"{key}=")]
    return value


def test_the_unit_verifies_without_a_single_warning(tmp_path) -> None:
    # systemd-analyze exits 0 on unknown keys and bad values: it only warns.
    verified = subprocess.run(["systemd-analyze", "verify", f"--root={systemd_root(tmp_path)}", UNIT.name],
                              capture_output=True, text=True, timeout=120)
    assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", "")


def test_the_unit_is_hardened(tmp_path) -> None:
    # Exposure 0 (locked down) to 10 (unprotected); systemd calls up to 4.9 "OK".
    judged = subprocess.run(["systemd-analyze", "security", "--offline=yes", f"--root={systemd_root(tmp_path)}",
                             "--threshold=45", UNIT.name], capture_output=True, text=True, timeout=120)
    assert judged.returncode == 0, judged.stdout[-3000:] + judged.stderr


@pytest.mark.root
@pytest.mark.slow
def test_the_units_capabilities_are_all_that_watch_needs(tmp_path) -> None:
    """watch under exactly the unit's bounding set traces and alerts; with none it cannot load."""
    caps = [c.removeprefix("CAP_").lower() for c in unit_setting("CapabilityBoundingSet").split()]
    shutil.copy("/bin/sleep", tmp_path / "capsleeper")
    leak = subprocess.Popen(["sh", "-c", "while true; do ./capsleeper 1000 & sleep 0.5; done"],
                            cwd=tmp_path, start_new_session=True)
    bounding_set = ("setpriv", f"--bounding-set=-all,{','.join('+' + c for c in caps)}", "--")
    try:
        with LiveCommand("watch", "--json", wrapper=bounding_set, ready_timeout=120) as bounded:
            bounded.wait_for(lambda records: any(r["kind"] == "alert" and r["signature"] == "capsleeper <n>"
                                                 and r["spawner"]["pid"] == leak.pid for r in records),
                             "the leak's alert", timeout=120)
    finally:
        os.killpg(leak.pid, signal.SIGKILL)
        leak.wait()
    assert bounded.returncode == 0, bounded.stderr
    none = subprocess.run(["setpriv", "--bounding-set=-all", "--", sys.executable, "-m", "spawnwatch", "watch",
                           "--json", "--duration", "1"], capture_output=True, text=True, timeout=120)
    assert none.returncode == 3 and "could not load the BPF programs" in none.stderr


KUBERNETES = REPO / "deploy" / "kubernetes"
KUSTOMIZATION = KUBERNETES / "kustomization.yaml"


def manifests() -> dict[str, dict]:
    """Every Kubernetes object shipped, by kind (one of each)."""
    import yaml

    objects = [doc for path in sorted(KUBERNETES.glob("*.yaml")) if path != KUSTOMIZATION
               for doc in yaml.safe_load_all(path.read_text())]
    for obj in objects:
        assert {"apiVersion", "kind", "metadata"} <= set(obj) and obj["metadata"].get("name"), obj
    by_kind = {obj["kind"]: obj for obj in objects}
    assert len(by_kind) == len(objects), "one object of each kind"
    return by_kind


def test_the_kubernetes_objects_hang_together() -> None:
    """No cluster here: what can be checked without one, is."""
    objects = manifests()
    assert set(objects) == {"Namespace", "DaemonSet", "Service", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"}
    namespace = objects["Namespace"]["metadata"]["name"]
    assert all(o["metadata"].get("namespace") == namespace for k, o in objects.items() if k != "Namespace")
    daemonset = objects["DaemonSet"]
    pod = daemonset["spec"]["template"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["hostPID"] is True
    (container,) = pod["spec"]["containers"]
    caps = container["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert sorted(f"CAP_{c}" for c in caps["add"]) == sorted(unit_setting("CapabilityBoundingSet").split()), \
        "the pod gets what the systemd unit gets"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/lib/modules", "/usr/src", "/sys/kernel/tracing", "/sys/fs/cgroup"):
        assert mounts[path]["readOnly"] is True and volumes[mounts[path]["name"]]["hostPath"]["path"] == path
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = int(env["SPAWNWATCH_WATCH_METRICS_ADDRESS"].rpartition(":")[2])
    (container_port,) = container["ports"]
    assert container_port == {"name": "metrics", "containerPort": port}
    service, monitor = objects["Service"], objects["ServiceMonitor"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_the_prometheusrule_carries_the_shipped_rules_and_promtool_takes_them(tmp_path) -> None:
    import yaml

    rule = manifests()["PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text()), "regenerate prometheusrule.yaml from the rules file"
    extracted = tmp_path / "prometheusrule-rules.yml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    checked = promtool("check", "rules", str(extracted))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.root
def test_a_sandbox_that_hides_the_headers_from_root_is_named_as_such(tmp_path) -> None:
    """What ProtectKernelModules= does to /lib/modules (an inaccessible directory over it),
    under the unit's capabilities: one line that names the sandbox, not 'run as root'."""
    hidden = tmp_path / "inaccessible"
    hidden.mkdir(mode=0o000)
    caps = ",".join("+" + c.removeprefix("CAP_").lower() for c in unit_setting("CapabilityBoundingSet").split())
    sandboxed = subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /lib/modules && exec "$@"', str(hidden),
         "setpriv", f"--bounding-set=-all,{caps}", "--", sys.executable, "-m", "spawnwatch", "watch", "--duration", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert sandboxed.returncode == 3
    (error,) = [line for line in sandboxed.stderr.splitlines() if line.startswith("Error:")]
    assert "kernel headers: root may not read /lib/modules/" in error and "ProtectKernelModules" in error
    assert "sudo" not in error


def test_the_unit_and_the_pod_give_watch_its_default_state_dir() -> None:
    """The ledger `report` and `reap` read and the links a restart reads back: /var/lib/spawnwatch,
    writable under the unit's ProtectSystem=strict and kept when it stops (StateDirectory=, not
    RuntimeDirectory=), and on the node's disk for the DaemonSet."""
    from spawnwatch.config import load

    state_dir = load().watch.state_dir
    assert state_dir == f"/var/lib/{unit_setting('StateDirectory')}" and unit_setting("StateDirectoryMode") == "0700"
    assert not [line for line in UNIT.read_text().splitlines() if line.startswith("RuntimeDirectory")]
    pod = manifests()["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == state_dir]
    assert not mount.get("readOnly")
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["hostPath"]["path"] == state_dir


def test_the_pod_serves_metrics_on_its_pod_ip_alone_and_only_prometheus_may_connect() -> None:
    """The metrics carry argv-derived labels: not on every interface, not on the node's
    network (where no NetworkPolicy holds), and behind a policy that admits one peer."""
    from spawnwatch.sinks.prometheus import parse_address

    objects = manifests()
    pod = objects["DaemonSet"]["spec"]["template"]
    assert not pod["spec"].get("hostNetwork"), "a NetworkPolicy does not hold for a pod on the node's network"
    (container,) = pod["spec"]["containers"]
    env = [e["name"] for e in container["env"]]
    values = {e["name"]: e for e in container["env"]}
    assert values["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env.index("POD_IP") < env.index("SPAWNWATCH_WATCH_METRICS_ADDRESS"), "Kubernetes expands only earlier ones"
    address = values["SPAWNWATCH_WATCH_METRICS_ADDRESS"]["value"]
    for pod_ip in ("10.244.1.7", "fd00:10:244::7"):
        host, port = parse_address(address.replace("$(POD_IP)", pod_ip))
        assert (host, port) == (pod_ip, container["ports"][0]["containerPort"])
    assert "httpGet" not in container["livenessProbe"], "a GET of /metrics fails under basic auth or TLS"
    assert container["livenessProbe"]["tcpSocket"]["port"] == "metrics"

    policy = objects["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "metrics"}]
    (peer,) = rule["from"]  # one peer holding both selectors: that namespace AND those pods, not either
    assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"]


def test_the_pod_mounts_a_web_config_secret_if_there_is_one() -> None:
    pod = manifests()["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "web-config"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "web-config"]
    assert volume["secret"]["optional"] is True and volume["secret"]["defaultMode"] == 0o400
    assert mount["readOnly"] is True
    documented = (KUBERNETES / "daemonset.yaml").read_text()
    assert f'"--web-config-file", "{mount["mountPath"]}/web-config.yml"' in documented
    assert f"secret generic {volume['secret']['secretName']}" in documented


def test_the_namespace_admits_the_privileged_pod() -> None:
    labels = manifests()["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def test_the_pod_mounts_the_state_of_every_runtime_read_only_and_no_runtime_socket() -> None:
    """Where adapters/runtimes read it, with the default host_root ("/"): the same paths."""
    from spawnwatch.adapters.runtimes import containerd, crio, podman

    pod = manifests()["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in (f"{containerd.STATE}/{containerd.TASKS}", *crio.ROOTS, podman.ROOTFUL_STORAGE):
        assert mounts[path]["readOnly"] is True and volumes[mounts[path]["name"]]["hostPath"]["path"] == path, path
    assert containerd.STATE not in mounts, "containerd's state dir holds its socket: only its tasks are mounted"
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] not in ("state", "tmp"))


def test_the_servicemonitor_and_the_rule_carry_the_label_kube_prometheus_stack_selects_by() -> None:
    import yaml

    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in KUBERNETES.glob("*.yaml") if p != KUSTOMIZATION)
    if shutil.which("kubectl") is None:
        missing_prerequisite("kubectl is not installed (it builds the kustomization offline)")
    built = subprocess.run(["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    objects = {o["kind"]: o for o in yaml.safe_load_all(built.stdout)}
    shipped = manifests()
    assert set(objects) == set(shipped)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert objects[kind]["metadata"]["labels"].pop("release") == "kube-prometheus-stack"
    assert objects == shipped  # nothing else changed


def startup_probe() -> list[str]:
    (container,) = manifests()["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    probe = container["startupProbe"]
    assert probe["failureThreshold"] * probe["periodSeconds"] >= 300, "bcc may compile for minutes on a busy node"
    return probe["exec"]["command"]


def test_the_startup_probe_reads_the_ledger_that_watch_writes_in_its_state_dir() -> None:
    from spawnwatch.config import load

    command = startup_probe()
    assert command[0] == "/opt/spawnwatch/bin/python"  # deploy/container/Dockerfile's venv
    assert f"ledger.read('{load().watch.state_dir}')" in command[-1]
    pod = manifests()["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert load().watch.state_dir in {m["mountPath"] for m in container["volumeMounts"]}


@pytest.mark.root
def test_the_startup_probe_passes_only_while_an_attached_watch_keeps_the_ledger(tmp_path) -> None:
    """Before `watch`: no ledger; once it printed ready (after attaching): passes; once it
    ended: its ledger is stale, as a previous pod's on the node's /run."""
    from conftest import wait_for
    from live import LiveCommand
    from spawnwatch.config import load

    state_dir = str(tmp_path / "state")
    command = [sys.executable, *startup_probe()[1:-1],
               startup_probe()[-1].replace(f"'{load().watch.state_dir}'", repr(state_dir))]

    def probe() -> int:
        return subprocess.run(command, capture_output=True, timeout=60).returncode

    assert probe() != 0
    with LiveCommand("watch", "--json", "--state-dir", state_dir):
        wait_for(lambda: probe() == 0, "the startup probe to pass", deadline=60.0)
    assert probe() != 0
