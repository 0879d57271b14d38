"""deploy/docker-compose.yml and deploy/k8s/*.yaml, offline: each against its
schema (the Compose Specification's, vendored by check-jsonschema; the
Kubernetes API's, shipped by kubernetes-validate, strict so that a misspelt
field fails), then the wiring no schema can see: FUSE privileges, mount
propagation, probes, and settings the image actually reads.  test_compose.py
and test_kube.py run them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dnpfs import __version__

from .conftest import DEPLOY, ROOT


COMPOSE = DEPLOY / "docker-compose.yml"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
# Native sidecars (initContainers with restartPolicy: Always) are on by default
# from Kubernetes 1.29: the oldest version the manifests are meant for.
OLDEST_KUBERNETES = "1.29"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _k8s_documents() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in K8S for doc in yaml.safe_load_all(path.read_text()) if doc]


def _healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK CMD, as the argv list it is written as."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?\bCMD (\[.*\])\s*$", text, re.M)
    assert match, "the Dockerfile has no exec-form HEALTHCHECK CMD"
    return json.loads(match.group(1))


def _entrypoint_variables() -> set[str]:
    return set(re.findall(r"\$\{?(DNPFS_[A-Z_]+)", (DEPLOY / "entrypoint.sh").read_text()))


# -- schemas ----------------------------------------------------------------

def _check_compose(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)], capture_output=True, text=True, timeout=120)


def test_compose_file_matches_the_compose_specification(tmp_path):
    result = _check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator does catch mistakes: a misspelt propagation key fails.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("propagation: rshared", "propogation: rshared"))
    assert _check_compose(broken).returncode != 0


def _kubernetes_versions() -> list[str]:
    from kubernetes_validate import utils

    supported = {utils.major_minor(v) for v in utils.all_versions()}
    latest = utils.major_minor(utils.latest_version())
    return sorted({v for v in (OLDEST_KUBERNETES, latest) if v in supported})


def test_kubernetes_manifests_match_the_api_schemas():
    import kubernetes_validate

    versions = _kubernetes_versions()
    assert versions, "kubernetes-validate knows none of the versions the manifests target"
    documents = _k8s_documents()
    assert {doc["kind"] for _, doc in documents} >= {"Namespace", "ConfigMap", "DaemonSet", "Pod"}
    for path, doc in documents:
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} against "
                            f"Kubernetes {version}: {e.caught}", pytrace=False)


def test_kubernetes_validation_rejects_a_misspelt_field():
    import kubernetes_validate

    [doc] = [d for p, d in _k8s_documents() if d["kind"] == "DaemonSet"]
    mount = doc["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    mount["mountPropogation"] = mount.pop("mountPropagation")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, _kubernetes_versions()[-1], strict=True)


# -- compose wiring ---------------------------------------------------------

def test_compose_runs_dnpfs_with_what_fuse_needs():
    services = _compose()["services"]
    dnpfs = services["dnpfs"]
    context = (COMPOSE.parent / dnpfs["build"]["context"]).resolve()
    assert context == ROOT
    assert context / dnpfs["build"]["dockerfile"] == ROOT / "Dockerfile"
    assert any(d.split(":")[0] == "/dev/fuse" for d in dnpfs["devices"])
    assert "SYS_ADMIN" in dnpfs["cap_add"]
    assert "apparmor:unconfined" in dnpfs["security_opt"]
    [shared] = [v for v in dnpfs["volumes"] if v["target"] == "/mnt/dnpfs"]
    assert shared["type"] == "bind" and shared["bind"]["propagation"] == "rshared"
    # The pipes are mounted below the bound directory, not on it, so that a
    # dead mount of a killed dnpfs does not stop the next one from starting
    # (tests/deploy/test_containers.py runs that).
    mountpoint = dnpfs["environment"]["DNPFS_MOUNTPOINT"]
    assert Path(mountpoint).parent == Path(shared["target"])
    assert dnpfs["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_applications_share_the_pipes_through_kafka():
    services = _compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    assert "broker" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "healthcheck" in kafka
    bootstrap = services["dnpfs"]["environment"]["DNPFS_KAFKA_BOOTSTRAP"]
    assert f"PLAINTEXT://{bootstrap}" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    dnpfs = services["dnpfs"]
    [shared] = [v for v in dnpfs["volumes"] if v["target"] == "/mnt/dnpfs"]
    mountpoint = dnpfs["environment"]["DNPFS_MOUNTPOINT"]
    apps = {name: s for name, s in services.items() if name not in ("kafka", "dnpfs")}
    assert {"producer", "consumer"} <= set(apps)
    for name, app in apps.items():
        [pipes] = [v for v in app["volumes"] if v["source"] == shared["source"]]
        assert pipes["target"] == shared["target"], name
        assert pipes["bind"]["propagation"] == "rslave", name
        assert pipes.get("read_only") is True, name  # no stray files while dnpfs is down
        assert app["depends_on"]["dnpfs"]["condition"] == "service_healthy", name
        assert f"{mountpoint}/ticks" in " ".join(app["command"]), name


# -- Kubernetes wiring ------------------------------------------------------

def _pod_specs() -> list[tuple[str, dict]]:
    specs = []
    for path, doc in _k8s_documents():
        if doc["kind"] == "Pod":
            specs.append((path.name, doc["spec"]))
        elif doc["kind"] in ("DaemonSet", "Deployment"):
            specs.append((path.name, doc["spec"]["template"]["spec"]))
    return specs


def _containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_bidirectional_propagation_only_in_privileged_containers():
    """The API server's rule, which the schema cannot express."""
    for name, spec in _pod_specs():
        for c in _containers(spec):
            if any(m.get("mountPropagation") == "Bidirectional" for m in c.get("volumeMounts", [])):
                assert c.get("securityContext", {}).get("privileged") is True, (name, c["name"])


def _dnpfs_containers() -> list[tuple[str, dict, dict]]:
    return [(name, spec, c) for name, spec in _pod_specs() for c in _containers(spec)
            if c["image"].split(":")[0] == "dnpfs"]


def test_daemonset_mounts_the_pipes_on_the_node():
    [(path, ds)] = [(p, d) for p, d in _k8s_documents() if d["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    [c] = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    shared = mounts["/mnt/dnpfs"]
    assert shared["mountPropagation"] == "Bidirectional"
    assert volumes[shared["name"]]["hostPath"]["path"] == "/mnt/dnpfs"
    assert volumes[mounts["/dev/fuse"]["name"]]["hostPath"] == {"path": "/dev/fuse",
                                                                 "type": "CharDevice"}
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    # Below the hostPath directory, not on it (a dead mount there would stop
    # the kubelet from starting the next dnpfs pod).
    assert env["DNPFS_MOUNTPOINT"] == "/mnt/dnpfs/pipes"
    # Applications on the node take the node's directory with HostToContainer,
    # read-only, at the same path.
    readers = [(n, s) for n, s in _pod_specs() if any(
        v.get("hostPath", {}).get("path") == "/mnt/dnpfs" for v in s["volumes"]) and n != path.name]
    assert readers
    for n, s in readers:
        host = {v["name"] for v in s["volumes"] if v.get("hostPath", {}).get("path") == "/mnt/dnpfs"}
        for c in _containers(s):
            for m in c.get("volumeMounts", []):
                if m["name"] in host:
                    assert m["mountPropagation"] == "HostToContainer", (n, c["name"])
                    assert m.get("readOnly") is True, (n, c["name"])
                    assert m["mountPath"] == "/mnt/dnpfs", (n, c["name"])


def test_sidecar_pod_shares_its_mount_with_the_application_containers():
    [pod] = [d for _, d in _k8s_documents() if d["kind"] == "Pod"]
    spec = pod["spec"]
    [sidecar] = [c for c in spec["initContainers"] if c["image"].split(":")[0] == "dnpfs"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: first up, last down
    assert "startupProbe" in sidecar            # apps start once the mount answers
    [mount] = sidecar["volumeMounts"]
    assert mount["mountPropagation"] == "Bidirectional"
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert Path(env["DNPFS_MOUNTPOINT"]).parent == Path(mount["mountPath"])
    assert len(spec["containers"]) >= 2
    for c in spec["containers"]:
        [m] = [m for m in c["volumeMounts"] if m["name"] == mount["name"]]
        assert m["mountPropagation"] == "HostToContainer", c["name"]
        assert m.get("readOnly") is True, c["name"]
        assert m["mountPath"] == mount["mountPath"], c["name"]


def test_dnpfs_containers_probe_as_the_image_healthcheck_does():
    command = _healthcheck_command()
    containers = _dnpfs_containers()
    assert containers
    for name, _, c in containers:
        for probe in ("startupProbe", "livenessProbe"):
            assert c[probe]["exec"]["command"] == command, (name, c["name"], probe)


def test_configmap_is_used_and_namespaced():
    documents = _k8s_documents()
    [namespace] = [d for _, d in documents if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    for path, doc in documents:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], path.name
    maps = {d["metadata"]["name"] for _, d in documents if d["kind"] == "ConfigMap"}
    for name, _, c in _dnpfs_containers():
        refs = {e["configMapRef"]["name"] for e in c.get("envFrom", [])}
        assert refs and refs <= maps, (name, c["name"])


# -- across files -----------------------------------------------------------

def test_every_setting_is_one_the_image_reads():
    """A variable the entrypoint does not know would be silently ignored."""
    known = _entrypoint_variables()
    used = set(_compose()["services"]["dnpfs"].get("environment", {}))
    for _, doc in _k8s_documents():
        if doc["kind"] == "ConfigMap":
            used |= set(doc["data"])
    for _, _, c in _dnpfs_containers():
        used |= {e["name"] for e in c.get("env", [])}
    assert used and used <= known, used - known
    # ... and every variable the entrypoint reads is documented where users look.
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert {v for v in known if v not in docs} == set()


def test_deployments_run_the_image_of_this_version():
    images = {_compose()["services"]["dnpfs"]["image"]}
    images |= {c["image"] for _, _, c in _dnpfs_containers()}
    assert images == {f"dnpfs:{__version__}"}
