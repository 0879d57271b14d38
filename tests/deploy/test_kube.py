"""deploy/k8s/ run with `podman kube play` (podman 4.3, runc): the DaemonSet's
pod with the application Deployment on the same "node" (this machine), and the
sidecar pod.

podman 4.3 plays Pods and Deployments, and a ConfigMap given with
--configmap; what the test changes in the shipped manifests, and only that:
- the DaemonSet is played as a Pod of its pod template (its nearest
  equivalent: one pod on this one node);
- the sidecar, a native one (an init container with restartPolicy: Always),
  is played as an ordinary container of its pod, first in the list: podman
  refuses probes on init containers and would wait for it to exit.  So the
  application containers start with it, not after its startupProbe: the
  read-only emptyDir is what keeps them from writing into the directory
  before the mount comes;
- images that cannot be pulled here are local stand-ins (the session's dnpfs
  image; the debootstrap bookworm, given the PATH that debian:bookworm-slim
  sets, for debian:bookworm-slim);
- the node's /mnt/dnpfs is a test directory; the emptyDir is a hostPath of
  a test directory with shared propagation, as the kubelet makes it: podman
  makes an emptyDir a named volume, and propagates no mount through that;
- the ConfigMap's Kafka is the dev broker, with a topic prefix of the test's
  own, reached with hostNetwork.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from ..util import wait_for
from .conftest import DEPLOY, ensure_debs, sh
from .containers import SharedDir, engine_env, fuse_mounts_on
from .image import BASE

pytestmark = [pytest.mark.deploy_image, pytest.mark.kafka]

K8S = DEPLOY / "k8s"
PATH = {"name": "PATH", "value": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def _load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def _local_images(spec: dict, dnpfs_image: str) -> None:
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        if c["image"].split(":")[0] == "dnpfs":
            c["image"] = dnpfs_image
        else:
            c["image"] = BASE
            c["env"] = [*c.get("env", []), PATH]


class Kube:
    def __init__(self, tmp_path: Path, bootstrap: str):
        ensure_debs("podman", "runc")
        self.tmp = tmp_path
        self.id = f"dnpfs-t{uuid.uuid4().hex[:8]}"
        self.env = engine_env(tmp_path)
        self.played: list[Path] = []
        self.closing: list = []
        configmap = _load("configmap.yaml")
        configmap["data"].update(DNPFS_KAFKA_BOOTSTRAP=bootstrap, DNPFS_TOPIC_PREFIX=f"{self.id}.")
        self.configmap = tmp_path / "configmap.yaml"
        self.configmap.write_text(yaml.safe_dump(configmap))

    def play(self, name: str, doc: dict) -> None:
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc))
        self.played.append(path)
        r = subprocess.run(["podman", "kube", "play", "--configmap", str(self.configmap), str(path)],
                           capture_output=True, text=True, env=self.env, timeout=180,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"podman kube play {name}:\n{r.stdout}\n{r.stderr}"

    def logs(self, container: str) -> str:
        return subprocess.run(["podman", "logs", container], text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60).stdout

    def close(self) -> None:
        for path in reversed(self.played):  # containers first, then their mounts
            subprocess.run(["podman", "kube", "down", str(path)], capture_output=True,
                           env=self.env, timeout=180)
        for close in self.closing:
            close()
        self.played, self.closing = [], []


@pytest.fixture
def kube(image, tmp_path, kafka_bootstrap):
    k = Kube(tmp_path, kafka_bootstrap)
    yield k
    k.close()


def test_daemonset_pod_serves_the_node_and_its_applications(image, kube, tmp_path):
    node = SharedDir(tmp_path / "node-mnt-dnpfs")
    try:
        daemonset = _load("daemonset.yaml")
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{kube.id}-dnpfs", "namespace": "dnpfs",
                            "labels": daemonset["spec"]["template"]["metadata"]["labels"]},
               "spec": daemonset["spec"]["template"]["spec"]}
        pod["spec"]["hostNetwork"] = True
        _local_images(pod["spec"], image.name)
        app = _load("node-app.yaml")
        app["metadata"]["name"] = f"{kube.id}-reader"
        _local_images(app["spec"]["template"]["spec"], image.name)
        for spec in (pod["spec"], app["spec"]["template"]["spec"]):
            for v in spec["volumes"]:
                if v.get("hostPath", {}).get("path") == "/mnt/dnpfs":
                    v["hostPath"]["path"] = str(node.path)
                elif v.get("hostPath", {}).get("path") == "/var/lib/dnpfs":
                    v["hostPath"]["path"] = str(tmp_path / "node-var-lib-dnpfs")
        # The application first: it must see the mount that comes after it.
        kube.play("node-app", app)
        kube.play("daemonset-pod", pod)
        pipes = node.path / "pipes"
        wait_for(lambda: fuse_mounts_on(pipes), timeout=60, interval=0.5,
                 what="the DaemonSet pod's mount on the node's directory")
        # The node writes; the application reads as reader group node-app.
        sh(["mkfifo", str(pipes / "ticks")])
        for i in range(3):
            sh(["sh", "-c", f"echo tick-{i} > {pipes}/ticks"])
        reader = f"{kube.id}-reader-pod-0-reader"
        wait_for(lambda: kube.logs(reader).count("tick-") >= 3, timeout=60, interval=0.5,
                 what="three ticks read by node-app")
        assert [t for t in kube.logs(reader).splitlines() if t.startswith("tick-")] == \
            ["tick-0", "tick-1", "tick-2"]
    finally:
        kube.close()
        node.close()


def test_sidecar_pod_passes_ticks_between_its_containers(image, kube, tmp_path):
    # What the kubelet makes of an emptyDir: a directory of the node's,
    # bound into the containers, where mount propagation applies.  podman
    # makes it a named volume instead, and propagates no mount through that.
    pod_dir = SharedDir(tmp_path / "empty-dir")
    kube.closing.append(pod_dir.close)
    pod = _load("sidecar-pod.yaml")
    pod["metadata"]["name"] = f"{kube.id}-ticks"
    spec = pod["spec"]
    spec["hostNetwork"] = True
    [sidecar] = spec.pop("initContainers")
    del sidecar["restartPolicy"]
    spec["containers"].insert(0, sidecar)
    _local_images(spec, image.name)
    [shared] = [v for v in spec["volumes"] if "emptyDir" in v]
    del shared["emptyDir"]
    shared["hostPath"] = {"path": str(pod_dir.path), "type": "Directory"}
    kube.play("sidecar-pod", pod)

    def ticks():
        return [t for t in kube.logs(f"{kube.id}-ticks-consumer").splitlines() if " UTC " in t]
    try:
        wait_for(lambda: len(ticks()) >= 3, timeout=90, interval=1,
                 what="three ticks in the consumer's log")
    except AssertionError as e:
        raise AssertionError(f"{e}\n" + "\n".join(
            f"--- {c}\n" + kube.logs(f"{kube.id}-ticks-{c}")[-1500:]
            for c in ("dnpfs", "producer", "consumer"))) from None
    log = kube.logs(f"{kube.id}-ticks-dnpfs")
    assert "mounted kafka:" in log and " on /dnpfs/pipes " in log
    assert "not empty" not in log
