"""The README's "In a cluster" commands, run as a new user would: the real `helm` and `kubectl`, on a
control plane of its own (nothing installed yet, as on a fresh cluster) with two nodes labelled for
examples/quick-cluster.yaml.

The commands are read from the README itself, so that the test runs what the README says. The
operator runs as a pod of the chart's Deployment, under the chart's ServiceAccount and RBAC: the node
agent runs the Deployment's own command (`python -m cardeval.operator`, this environment's interpreter
standing for the image) with its env, and the in-cluster client finds the pod's ServiceAccount token,
CA and namespace at /var/run/secrets/kubernetes.io/serviceaccount and `KUBERNETES_SERVICE_HOST`/`_PORT`,
as in a kubelet's container. No operator process is started by the test.

One thing is adapted, because the test nodes force it: the node agent runs pods in the host's network
namespace, so the operator's metrics and health ports (8000, 8080) would be the host's; the `helm install`
line gets `--set metrics.port=…,health.port=…` with free ones. The example is applied as it is: the pods
see no card, so its card workloads say so and their clauses are `Error` — the evaluation still completes,
which is what `kubectl wait --for=condition=Complete` waits for.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from cardeval_testbed import ControlPlane

from operator_harness import ROOT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

README = ROOT / "README.md"
NAMESPACE = "cardeval-system"


def readme_commands() -> list[str]:
    """The shell block under "## In a cluster", one command a line (comments stay: the shell drops them)."""
    section = README.read_text().split("\n## In a cluster\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "no sh block under '## In a cluster' in README.md"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fresh_cluster():
    with ControlPlane() as cp:
        yield cp


def test_readme_in_a_cluster_commands(fresh_cluster, tmp_path):
    cp = fresh_cluster
    commands = readme_commands()
    assert [c.split()[:2] for c in commands] == [["helm", "install"], ["kubectl", "apply"],
                                                 ["kubectl", "wait"], ["kubectl", "get"]], commands
    helm_install, apply, wait, get = commands
    helm_install += f" --set metrics.port={free_port()},health.port={free_port()}"
    env = {**cp.env(), "HELM_CACHE_HOME": str(tmp_path / "helm"), "HELM_CONFIG_HOME": str(tmp_path / "helm"),
           "HELM_DATA_HOME": str(tmp_path / "helm")}

    def sh(command: str, timeout: float = 120) -> str:
        out = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=timeout)
        assert out.returncode == 0, f"{command}\nexit {out.returncode}\n{out.stdout}{out.stderr}\n{diagnose()}"
        return out.stdout

    def diagnose() -> str:
        def run(*args: str) -> str:
            out = cp.kubectl(*args, check=False)
            return out.stdout + out.stderr

        return (f"--- pods:\n{run('get', 'pods', '-A', '-o', 'wide')}"
                f"--- operator log:\n{run('logs', '-n', NAMESPACE, 'deploy/cardeval', '--tail=60')}"
                f"--- evaluation:\n{run('get', 'cardevaluation', 'quick-check', '-o', 'yaml')}"
                f"--- node agent log:\n{agent.log_text()[-4000:]}")

    agent = cp.node_agent([{"name": f"quick-{i}", "capacity": {"example.com/accel": "2"},
                            "labels": {"cardeval.io/pool": "quick"}} for i in (1, 2)])
    try:
        sh(helm_install)
        sh(apply)
        sh(wait, timeout=600)  # the README's 30 minutes: here, well before pytest's own limit
        table = sh(get)
        header, row = table.splitlines()[:2]
        assert header.split()[:2] == ["NAME", "PHASE"] and row.split()[:2] == ["quick-check", "Complete"], table

        # It was the chart's Deployment that did it: one operator pod, under the chart's ServiceAccount,
        # its token from the ServiceAccount admission's volume, never restarted (no crash loop).
        pods = json.loads(cp.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=cardeval",
                                     "-o", "json").stdout)["items"]
        assert len(pods) == 1, diagnose()
        (op,) = pods
        assert op["spec"]["serviceAccountName"] == "cardeval"
        assert any(v["name"].startswith("kube-api-access-") for v in op["spec"]["volumes"])
        assert op["status"]["phase"] == "Running"
        assert [s["restartCount"] for s in op["status"]["containerStatuses"]] == [0], diagnose()

        status = json.loads(cp.kubectl("get", "cardevaluation", "quick-check", "-o", "json").stdout)["status"]
        assert status["nodesTotal"] == status["nodesDone"] == 2
        assert status["compliant"] is False
        # its Jobs ran on the nodes: the card workloads saw no card there, and said so
        jobs = json.loads(cp.kubectl("get", "jobs", "-n", NAMESPACE, "-o", "json").stdout)["items"]
        assert jobs and all(j["status"].get("succeeded") == 1 for j in jobs), diagnose()
        assert status["summary"]["errored"] > 0, status["summary"]
    finally:
        cp.kubectl("delete", "-f", str(ROOT / "examples" / "quick-cluster.yaml"), "--wait", "--timeout=120s",
                   check=False, timeout=150)
        subprocess.run([str(cp.bin.helm), "uninstall", "cardeval", "--namespace", NAMESPACE, "--wait"],
                       env=env, capture_output=True, text=True, timeout=120)
        agent.stop()
    assert cp.api("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/cardeval") is None
