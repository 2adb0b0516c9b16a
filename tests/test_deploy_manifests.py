"""Structure of deploy/compose and deploy/k8s: services, ports, probes, and settings that parse.

No Docker or cluster needed: the YAML is read with PyYAML and every ``ONLINE_ALS_*`` variable
and the ConfigMap's TOML go through ``worker.config.load_config`` as the processes would.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.config import CONFIG_FILE_ENV, ENV_PREFIX, Settings, load_config
from worker.devstack import StackConfig

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = ROOT / "deploy" / "compose"
K8S = ROOT / "deploy" / "k8s"
PROM_DIR = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
STACK = StackConfig()
DEFAULTS = Settings()


def settings_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}


# ---- compose ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())


def host_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    out = {}
    for spec in service.get("ports", []):
        host, container = str(spec).rsplit(":", 1) if ":" in str(spec) else (spec, spec)
        out[int(container)] = int(str(host).rsplit(":", 1)[-1])
    return out


def test_compose_services_present(compose: dict[str, Any]) -> None:
    assert {"kafka", "redis", "cassandra", "prometheus", "grafana", "worker", "pushgateway",
            "retrain"} <= set(compose["services"])


def test_compose_ports_match_the_local_stack(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert host_ports(s["kafka"])[STACK.kafka_port] == STACK.kafka_port
    assert host_ports(s["redis"])[STACK.redis_port] == STACK.redis_port
    assert host_ports(s["cassandra"])[STACK.cassandra_port] == STACK.cassandra_port
    assert host_ports(s["prometheus"])[9090] == STACK.prometheus_port
    assert host_ports(s["worker"])[DEFAULTS.metrics.port] == DEFAULTS.metrics.port
    # the same server versions as the local stack
    assert s["kafka"]["image"] == f"apache/kafka:{STACK.kafka_version}"
    assert s["cassandra"]["image"] == f"cassandra:{STACK.cassandra_version}"
    # KRaft, single node, with a listener for containers and one for the host
    env = s["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert f"localhost:{STACK.kafka_port}" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_compose_healthchecks_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        if "jobs" in svc.get("profiles", []):
            continue  # one-shot jobs
        hc = svc.get("healthcheck")
        assert hc and hc.get("test"), f"{name} has no healthcheck"
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond.get("condition") == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep}'s health"
    assert "/healthz" in " ".join(services["worker"]["healthcheck"]["test"])


def test_compose_env_are_valid_settings(compose: dict[str, Any]) -> None:
    s = compose["services"]
    for name in ("worker", "retrain"):
        env = {k: str(v) for k, v in s[name]["environment"].items()}
        assert env and set(env) == set(settings_env(env)), name
        cfg = load_config(environ=env)  # raises ConfigError on an unknown section/key/value
        assert cfg.metrics.host == "0.0.0.0" and cfg.metrics.port == DEFAULTS.metrics.port
        # the worker reaches the broker's container listener, the stores by service name
        host, port = cfg.kafka.bootstrap_servers.split(":")
        assert host == "kafka"
        assert f"PLAINTEXT://kafka:{port}" in s["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        assert cfg.redis.host == "redis" and cfg.redis.port == STACK.redis_port
        assert cfg.cassandra.hosts == ("cassandra",) and cfg.cassandra.port == STACK.cassandra_port
        assert cfg.metrics.pushgateway is not None
        assert cfg.metrics.pushgateway.endswith(f"pushgateway:{next(iter(host_ports(s['pushgateway'])))}")


def test_compose_files_it_mounts_and_builds_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (COMPOSE_DIR / src).exists(), f"{name}: {src}"
    build = compose["services"]["worker"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == ROOT
    dockerfile = context / build["dockerfile"]
    text = dockerfile.read_text()
    assert 'ENTRYPOINT ["online-als"]' in text and "EXPOSE 8000" in text
    ignore = (dockerfile.parent / (dockerfile.name + ".dockerignore")).read_text().split()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert "!" + pattern.rstrip("*") in ignore, f"{pattern} left out of the build context"


def test_compose_prometheus_and_grafana_wiring(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    jobs = {c["job_name"]: c for c in prom["scrape_configs"]}
    dns = jobs["online-als-worker"]["dns_sd_configs"][0]
    assert dns["names"] == ["worker"] and dns["port"] == DEFAULTS.metrics.port
    assert jobs["pushgateway"]["static_configs"][0]["targets"] == ["pushgateway:9091"]
    assert prom["rule_files"] == ["alerts.yml"]
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "online-als.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.split(":")[1] == path and m.startswith("../grafana/dashboards") for m in mounts)


# ---- k8s --------------------------------------------------------------------------------------


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in sorted(K8S.glob("*.yaml")):
        if f.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                out.append((f.name, doc))
    return out


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in k8s_docs() if d["kind"] == kind and d["metadata"].get("name") == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.fixture(scope="module")
def toml_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cm = one("ConfigMap", "online-als-config")
    path = tmp_path_factory.mktemp("cm") / "online-als.toml"
    path.write_text(cm["data"]["online-als.toml"])
    return path


@pytest.fixture(scope="module")
def k8s_settings(toml_file: Path) -> Settings:
    return load_config(toml_file, environ={})


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """Env as the pod would see it; secret/field references get a stand-in value."""
    env = {}
    for e in container.get("env", []):
        env[e["name"]] = str(e["value"]) if "value" in e else f"from-{next(iter(e['valueFrom']))}"
    return env


def test_k8s_kinds_and_kustomization() -> None:
    kinds = {d["kind"] for _, d in k8s_docs()}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget",
            "CronJob", "Job", "ScaledObject", "ServiceMonitor"} <= kinds
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (K8S / res).is_file(), res
    in_kust = {d["kind"] for f, d in k8s_docs() if f in kust["resources"]}
    assert {"Deployment", "CronJob", "ScaledObject", "ConfigMap", "Service"} <= in_kust
    assert "secret.example.yaml" not in kust["resources"]  # never apply placeholder passwords
    for f, d in k8s_docs():
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == kust["namespace"], f
        assert "apiVersion" in d and d["metadata"].get("name") or d["metadata"].get("generateName")


def test_k8s_configmap_toml_parses(k8s_settings: Settings, toml_file: Path) -> None:
    assert k8s_settings.metrics.host == "0.0.0.0"
    assert k8s_settings.metrics.port == DEFAULTS.metrics.port
    assert k8s_settings.metrics.pushgateway
    raw = tomllib.loads(toml_file.read_text())
    assert "password" not in toml_file.read_text().lower().replace("# passwords", "")
    assert set(raw) <= set(Settings.model_fields)


def test_k8s_worker_deployment(k8s_settings: Settings, toml_file: Path) -> None:
    dep = one("Deployment", "online-als-worker")
    spec = dep["spec"]
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 0
    (c,) = pod["spec"]["containers"]
    assert c["args"][0] == "worker"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == k8s_settings.metrics.port
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"memory"} <= set(c["resources"][kind]), kind
    assert "cpu" in c["resources"]["requests"]
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert int(ann["prometheus.io/port"]) == k8s_settings.metrics.port

    env = container_env(c)
    # the config file is the ConfigMap key, mounted where ONLINE_ALS_CONFIG points
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    cfg_path = Path(env[CONFIG_FILE_ENV])
    cfg_vol = next(n for n, p in mounts.items() if Path(p) == cfg_path.parent)
    assert vols[cfg_vol]["configMap"]["name"] == "online-als-config"
    assert cfg_path.name in one("ConfigMap", "online-als-config")["data"]
    # every ONLINE_ALS_ variable is a real setting, on top of the TOML
    env[CONFIG_FILE_ENV] = str(toml_file)
    cfg = load_config(environ=env)
    assert cfg.redis.password is not None and cfg.worker.name == "from-fieldRef"
    for e in c["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == "online-als-secrets" and ref.get("optional") is True
            assert "PASSWORD" in e["name"]
    secret = one("Secret", "online-als-secrets")
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in c["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs <= set(secret["stringData"])


def test_k8s_service_and_scraping(k8s_settings: Settings) -> None:
    svc = one("Service", "online-als-worker-metrics")
    dep = one("Deployment", "online-als-worker")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    (port,) = svc["spec"]["ports"]
    assert port["port"] == k8s_settings.metrics.port and port["targetPort"] == "metrics"
    sm = one("ServiceMonitor", "online-als-worker")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == "online-als-worker"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    prom = yaml.safe_load((PROM_DIR / "prometheus-k8s.yml").read_text())
    job = next(c for c in prom["scrape_configs"] if c["job_name"] == "online-als-worker")
    ns = svc["metadata"]["namespace"]
    assert job["dns_sd_configs"][0]["names"] == [f"{svc['metadata']['name']}.{ns}.svc.cluster.local"]
    assert job["dns_sd_configs"][0]["port"] == k8s_settings.metrics.port
    pg_svc = one("Service", "pushgateway")
    assert k8s_settings.metrics.pushgateway == (
        f"http://pushgateway.{ns}.svc.cluster.local:{pg_svc['spec']['ports'][0]['port']}")


def test_k8s_keda_scaledobject_matches_the_config(k8s_settings: Settings) -> None:
    so = one("ScaledObject", "online-als-worker")
    assert so["spec"]["scaleTargetRef"]["name"] == one("Deployment", "online-als-worker")["metadata"]["name"]
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == k8s_settings.kafka.group_id
    assert meta["topic"] == k8s_settings.kafka.topic
    assert meta["bootstrapServers"] == k8s_settings.kafka.bootstrap_servers
    assert int(meta["lagThreshold"]) > 0
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
    assert so["spec"]["maxReplicaCount"] <= k8s_settings.kafka.partitions


def _cli_parses(args: list[str]) -> None:
    from worker.cli.main import build_parser

    ns = build_parser().parse_args(args)
    assert getattr(ns, "func", None) is not None, args


def test_k8s_retrain_cronjob_and_rollback_job(toml_file: Path) -> None:
    cj = one("CronJob", "online-als-retrain")
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cj["spec"]["schedule"].split()) == 5
    job = cj["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["args"] == ["retrain"]
    _cli_parses(c["args"])
    env = container_env(c)
    env[CONFIG_FILE_ENV] = str(toml_file)
    load_config(environ=env)

    text = (K8S / "rollback-job.yaml").read_text()
    assert "${VERSION}" in text
    rb = yaml.safe_load(text.replace("${VERSION}", "12"))
    assert rb["kind"] == "Job" and rb["metadata"]["generateName"]
    (c,) = rb["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["rollback", "--to", "12"]
    _cli_parses(c["args"])
    env = container_env(c)
    env[CONFIG_FILE_ENV] = str(toml_file)
    load_config(environ=env)


def test_compose_job_commands_parse(compose: dict[str, Any]) -> None:
    for name in ("worker", "retrain"):
        _cli_parses(list(compose["services"][name]["command"]))
    # the rollback recipe in the compose header and in docs/operations.md
    header = (COMPOSE_DIR / "docker-compose.yml").read_text()
    m = re.search(r"run --rm retrain (rollback --to \w+)", header)
    assert m
    _cli_parses(shlex.split(m.group(1).replace("N", "3")))


def test_k8s_probes_and_limits_on_every_workload() -> None:
    for f, d in k8s_docs():
        if d["kind"] not in ("Deployment", "CronJob", "Job"):
            continue
        spec = d["spec"]["jobTemplate"]["spec"] if d["kind"] == "CronJob" else d["spec"]
        for c in spec["template"]["spec"]["containers"]:
            assert "memory" in c["resources"]["limits"], f
            if d["kind"] == "Deployment":
                assert c.get("livenessProbe") and c.get("readinessProbe"), f


# ---- the HTTP API (online-als serve) --------------------------------------------------------


def test_compose_serving_service(compose: dict[str, Any]) -> None:
    svc = compose["services"]["serving"]
    _cli_parses(list(svc["command"]))
    env = {k: str(v) for k, v in svc["environment"].items()}
    cfg = load_config(environ=env)
    assert cfg.serve.host == "0.0.0.0" and cfg.serve.workers > 1
    assert host_ports(svc)[cfg.serve.port] == cfg.serve.port
    assert f":{cfg.serve.port}/healthz" in " ".join(svc["healthcheck"]["test"])
    assert cfg.redis.host == "redis" and "redis" in svc["depends_on"]
    prom = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    job = next(c for c in prom["scrape_configs"] if c["job_name"] == "online-als-serving")
    assert job["dns_sd_configs"][0] == {**job["dns_sd_configs"][0], "names": ["serving"],
                                        "port": cfg.serve.port}
    assert f"EXPOSE 8000 {cfg.serve.port}" in (COMPOSE_DIR / "Dockerfile").read_text()


def test_k8s_serving_deployment_and_services(toml_file: Path) -> None:
    dep = one("Deployment", "online-als-serving")
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["args"] == ["serve"]
    _cli_parses(c["args"])
    env = container_env(c)
    env[CONFIG_FILE_ENV] = str(toml_file)
    cfg = load_config(environ=env)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == cfg.serve.port and cfg.serve.host == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == cfg.serve.port
    # the CPU limit gives every serve process a core of its own
    assert float(c["resources"]["limits"]["cpu"]) >= cfg.serve.workers
    labels = pod["metadata"]["labels"]
    for name in ("online-als-serving", "online-als-serving-pods"):
        svc = one("Service", name)
        assert svc["spec"]["selector"].items() <= labels.items()
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
        assert svc["spec"]["ports"][0]["port"] == cfg.serve.port
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert {"serving-deployment.yaml", "serving-service.yaml"} <= set(kust["resources"])
    prom = yaml.safe_load((PROM_DIR / "prometheus-k8s.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "online-als-serving")
    assert job["dns_sd_configs"][0]["names"] == [
        "online-als-serving-pods.online-als.svc.cluster.local"]
