"""The deployment files: docker-compose.yml, deploy/kubernetes, deploy/prometheus, deploy/grafana.

Offline and without Docker: the files parse, reference only what exists (paths, services,
settings, metrics), and agree with each other and with the worker (ports, probes, user).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric
from pydantic import AliasChoices

from worker.config.settings import DEFAULT_DEFINITIONS, Settings
from worker.core.definitions import load_definitions
from worker.core.features import VOCABULARY
from worker.runtime.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "segworker.json"
COMPOSE_SCHEMA = DEPLOY / "compose-spec" / "compose-spec.json"

#: The Kubernetes Secret's shape, deliberately not applied by kustomization.yaml.
SECRET_EXAMPLE = "secret.example.yaml"
#: Settings the manifests leave unset on purpose.
NOT_IN_MANIFESTS = {
    "kafka_ssl_cafile": "only with a private CA, whose certificate must be mounted too",
    "web_allow_unauthenticated": "only behind a proxy that authenticates; the manifests "
    "set a token instead",
    "triggers_path": "the shipped triggers.yaml unless an operator mounts one of their own",
    "redis_shards": "its default follows redis_cluster (1, or 16 on a cluster); set once, "
    "before state is stored, to size a larger cluster",
}
#: Metrics the alerts and the dashboard use that worker/runtime/metrics.py does not expose yet.
PENDING_METRICS: set[str] = set()

EXPECTED_SERVICES = {"kafka", "redis", "worker", "generator", "prometheus", "grafana"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
COMPOSE_DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")
SEVERITIES = {"critical", "warning", "info"}


def load_yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as stream:
        return list(yaml.safe_load_all(stream))


def load_yaml(path: Path) -> Any:
    documents = load_yaml_documents(path)
    assert len(documents) == 1, f"{path}: expected one YAML document, got {len(documents)}"
    return documents[0]


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


YAML_FILES = sorted([COMPOSE_FILE, *DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])


@pytest.mark.parametrize("path", YAML_FILES, ids=relative)
def test_every_yaml_file_parses(path: Path) -> None:
    documents = load_yaml_documents(path)
    assert documents, f"{relative(path)} is empty"
    for document in documents:
        assert isinstance(document, dict), f"{relative(path)}: a document is not a mapping"


def test_dashboard_json_parses() -> None:
    assert isinstance(json.loads(DASHBOARD.read_text(encoding="utf-8")), dict)


# --- settings -------------------------------------------------------------------------


@cache
def setting_env_names() -> dict[str, str]:
    """Environment variable name -> Settings field, as pydantic-settings reads them."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if alias is None:
            names[f"{prefix}{field}".upper()] = field
        elif isinstance(alias, AliasChoices):
            for choice in alias.choices:
                assert isinstance(choice, str)
                names[choice.upper()] = field
        else:
            assert isinstance(alias, str)
            names[alias.upper()] = field
    return names


def test_setting_env_names_include_the_conventional_connection_names() -> None:
    names = setting_env_names()
    assert names["KAFKA_BOOTSTRAP_SERVERS"] == "kafka_bootstrap_servers"
    assert names["REDIS_URL"] == "redis_url"
    assert names["SEGWORKER_BATCH_SIZE"] == "batch_size"
    assert "SEGWORKER_NO_SUCH_SETTING" not in names


def assert_real_settings(names: set[str], where: str) -> None:
    known = setting_env_names()
    unknown = sorted(name for name in names if name not in known)
    assert not unknown, (
        f"{where} sets variables that are no setting of worker/config/settings.py: {unknown}"
    )


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``Settings()`` read from exactly ``environment`` (plus unrelated variables)."""
    known = setting_env_names()
    for name in list(os.environ):
        if name.upper() in known:
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings()


# --- Dockerfile -----------------------------------------------------------------------


@cache
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_last(keyword: str) -> str:
    values = [rest for kw, rest in dockerfile_instructions() if kw == keyword]
    assert values, f"deploy/Dockerfile has no {keyword}"
    return values[-1]


def test_dockerfile_copies_only_what_exists() -> None:
    copies = [rest.split() for kw, rest in dockerfile_instructions() if kw == "COPY"]
    assert copies
    for *sources, _target in copies:
        for source in sources:
            assert not source.startswith("--"), "COPY --from/--chown: update this test"
            assert (REPO / source).exists(), f"deploy/Dockerfile copies missing {source}"


def test_dockerfile_runs_as_numeric_non_root_user() -> None:
    user = dockerfile_last("USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, f"USER {user}: use a numeric non-root uid"


# --- docker-compose.yml ---------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    document = load_yaml(COMPOSE_FILE)
    assert isinstance(document, dict)
    return document


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def test_compose_has_the_expected_services() -> None:
    missing = EXPECTED_SERVICES - set(services())
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_compose_validates_against_the_compose_spec_schema() -> None:
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    # The vendored schema predates the top-level `name` key (see deploy/compose-spec).
    schema = copy.deepcopy(schema)
    schema["properties"].setdefault("name", {"type": "string"})
    # Its $schema is spelt in a way jsonschema does not recognise: name the draft.
    assert "2019-09" in schema["$schema"]
    validator = jsonschema.Draft201909Validator
    validator.check_schema(schema)
    errors = sorted(validator(schema).iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, error.path)) or '<root>'}: {error.message}" for error in errors
    )


def test_compose_services_have_an_image_or_a_build() -> None:
    for name, service in services().items():
        assert "image" in service or "build" in service, f"service {name}: no image, no build"
        if "image" in service:
            assert ":" in service["image"], f"service {name}: pin the image's tag"


def test_compose_build_paths_exist() -> None:
    for name, service in services().items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
        assert context.is_dir(), f"service {name}: build context {context} missing"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"service {name}: {dockerfile} missing"


def volume_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of a service's volumes, short or long syntax."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
            yield source, target
        else:
            yield volume.get("source", ""), volume["target"]


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The repository path that a bind mount of ``service`` shows at ``container_path``."""
    wanted = PurePosixPath(container_path)
    for source, target in volume_mounts(service):
        if is_bind(source) and wanted.is_relative_to(target):
            return (COMPOSE_FILE.parent / source / wanted.relative_to(target)).resolve()
    raise AssertionError(f"no bind mount shows {container_path}")


def test_compose_volume_paths_exist_and_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes") or {})
    used: set[str] = set()
    for name, service in services().items():
        for source, target in volume_mounts(service):
            assert target.startswith("/"), f"service {name}: mount target {target} not absolute"
            if is_bind(source):
                path = (COMPOSE_FILE.parent / source).resolve()
                assert path.exists(), f"service {name}: bind mount source {source} missing"
                assert path.is_relative_to(REPO), f"service {name}: {source} outside the repo"
            else:
                assert source in declared, f"service {name}: volume {source} not declared"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {sorted(declared - used)}"


def test_compose_depends_on_names_services() -> None:
    for name, service in services().items():
        depends_on = service.get("depends_on", [])
        for dependency in depends_on:
            assert dependency in services(), f"service {name} depends on unknown {dependency}"
            assert dependency != name
            if isinstance(depends_on, dict) and depends_on[dependency].get("condition") == (
                "service_healthy"
            ):
                assert "healthcheck" in services()[dependency], (
                    f"service {name} waits for {dependency} to be healthy; it has no healthcheck"
                )


def test_compose_healthchecks_are_well_formed() -> None:
    checks = {name: s["healthcheck"] for name, s in services().items() if "healthcheck" in s}
    assert {"kafka", "redis", "worker", "prometheus"} <= set(checks)
    for name, check in checks.items():
        test = check["test"]
        if isinstance(test, list):
            assert test[0] in {"CMD", "CMD-SHELL", "NONE"}, f"service {name}: healthcheck {test}"
            assert len(test) >= 2 or test[0] == "NONE", f"service {name}: empty healthcheck"
        else:
            assert isinstance(test, str) and test.strip(), f"service {name}: healthcheck {test!r}"
        for key in ("interval", "timeout", "start_period"):
            if key in check:
                assert COMPOSE_DURATION.match(str(check[key])), f"service {name}: {key}"
        if "retries" in check:
            assert isinstance(check["retries"], int) and check["retries"] > 0


def test_compose_worker_sets_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("worker", "generator"):
        environment = services()[name].get("environment", {})
        assert isinstance(environment, dict), f"service {name}: use the mapping form"
        assert_real_settings(set(environment), f"docker-compose.yml service {name}")
        settings_from({k: str(v) for k, v in environment.items()}, monkeypatch)
    assert "healthcheck" in services()["worker"]
    assert "/ready" in " ".join(services()["worker"]["healthcheck"]["test"])


def test_compose_prometheus_and_grafana_are_wired() -> None:
    prometheus, grafana = services()["prometheus"], services()["grafana"]
    config_flags = [c for c in prometheus.get("command", []) if c.startswith("--config.file=")]
    config_in_container = (
        config_flags[0].split("=", 1)[1] if config_flags else ("/etc/prometheus/prometheus.yml")
    )
    assert host_path(prometheus, config_in_container) == PROMETHEUS / "prometheus.yml"
    assert "9090:9090" in prometheus.get("ports", [])
    assert "3000:3000" in grafana.get("ports", [])

    environment = grafana["environment"]
    assert str(environment["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    home = environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home) == DASHBOARD

    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning == GRAFANA / "provisioning"
    for provider_file in (provisioning / "dashboards").glob("*.y*ml"):
        for provider in load_yaml(provider_file)["providers"]:
            folder = host_path(grafana, provider["options"]["path"])
            assert (folder / DASHBOARD.name).is_file(), f"{provider_file}: no dashboard there"
    datasources = [
        source
        for source_file in (provisioning / "datasources").glob("*.y*ml")
        for source in load_yaml(source_file)["datasources"]
    ]
    assert [s["url"] for s in datasources if s["type"] == "prometheus"] == [
        "http://prometheus:9090"
    ]


# --- Kubernetes -----------------------------------------------------------------------


@cache
def kustomization() -> dict[str, Any]:
    document = load_yaml(K8S / "kustomization.yaml")
    assert isinstance(document, dict)
    return document


@cache
def k8s_documents() -> tuple[tuple[Path, dict[str, Any]], ...]:
    files = sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))
    return tuple(
        (path, document)
        for path in files
        if path.name != "kustomization.yaml"
        for document in load_yaml_documents(path)
        if document is not None
    )


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [document for _path, document in k8s_documents() if document["kind"] == kind]


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in k8s_objects(kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def worker_pod() -> dict[str, Any]:
    return k8s_object("Deployment")["spec"]["template"]


def worker_container() -> dict[str, Any]:
    containers = worker_pod()["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_k8s_documents_are_namespace_agnostic_objects() -> None:
    kinds = set()
    for path, document in k8s_documents():
        where = relative(path)
        assert document.get("apiVersion"), f"{where}: no apiVersion"
        assert document.get("kind"), f"{where}: no kind"
        assert document.get("metadata", {}).get("name"), f"{where}: no metadata.name"
        assert "namespace" not in document["metadata"], f"{where}: hard-coded namespace"
        kinds.add(document["kind"])
    assert {"Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget"} <= kinds
    names = [(d["kind"], d["metadata"]["name"]) for _p, d in k8s_documents()]
    assert len(names) == len(set(names)), "duplicate Kubernetes objects"


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    assert kustomization()["kind"] == "Kustomization"
    assert "namespace" not in kustomization()
    resources = kustomization()["resources"]
    for resource in resources:
        assert (K8S / resource).is_file(), f"kustomization.yaml lists missing {resource}"
    manifests = {path.name for path, _document in k8s_documents()}
    assert set(resources) == manifests - {SECRET_EXAMPLE}


def test_selectors_match_the_pod_labels() -> None:
    labels = worker_pod()["metadata"]["labels"]
    selectors = [
        k8s_object("Deployment")["spec"]["selector"]["matchLabels"],
        k8s_object("Service")["spec"]["selector"],
        k8s_object("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector and selector.items() <= labels.items(), f"{selector} misses the pods"


def test_replicas_do_not_exceed_partitions_and_one_may_be_disrupted() -> None:
    deployment = k8s_object("Deployment")
    partitions = int(k8s_object("ConfigMap", "segworker-config")["data"]["SEGWORKER_PARTITIONS"])
    assert 2 <= deployment["spec"]["replicas"] <= partitions
    assert k8s_object("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def named_port(name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in worker_container()["ports"]}
    assert name in ports, f"no container port named {name}"
    return ports[name]


def container_env() -> dict[str, Any]:
    return {entry["name"]: entry for entry in worker_container().get("env", [])}


def test_probes_hit_health_and_ready_on_the_web_port() -> None:
    container = worker_container()
    assert container["image"] == "segworker:latest"
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    if "startupProbe" in container:
        assert container["startupProbe"]["httpGet"]["path"] == "/health"
    port = named_port("http")
    assert port == int(dockerfile_last("EXPOSE").split("/")[0])
    env = container_env()
    assert int(env["SEGWORKER_WEB_PORT"]["value"]) == port
    assert env["SEGWORKER_WEB_HOST"]["value"] == "0.0.0.0"
    service_ports = k8s_object("Service")["spec"]["ports"]
    assert [(p["port"], p["targetPort"]) for p in service_ports] == [(port, "http")]
    annotations = k8s_object("Service")["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == port
        assert annotations["prometheus.io/path"] == "/metrics"


def test_container_runs_as_non_root_on_a_read_only_root() -> None:
    pod_spec = worker_pod()["spec"]
    pod_context = pod_spec.get("securityContext", {})
    context = {**pod_context, **worker_container().get("securityContext", {})}
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001 == int(dockerfile_last("USER").split(":")[0])
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert "ALL" in context["capabilities"]["drop"]
    assert pod_spec["enableServiceLinks"] is False, "Service links inject SEGWORKER_* variables"
    assert 10 <= pod_spec["terminationGracePeriodSeconds"] <= 120


def test_writable_paths_are_empty_dirs() -> None:
    volumes = {v["name"]: v for v in worker_pod()["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in worker_container()["volumeMounts"]}
    # Faust creates its data directory in the working directory.
    for path in ("/tmp", dockerfile_last("WORKDIR")):
        assert path in mounts, f"{path} must be writable: mount an emptyDir there"
        assert "emptyDir" in volumes[mounts[path]["name"]]
        assert not mounts[path].get("readOnly", False)


def test_resources_are_requested_and_limited() -> None:
    resources = worker_container()["resources"]
    assert resources["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert {"cpu", "memory"} <= set(resources["limits"])


def test_referenced_config_maps_and_secrets_exist() -> None:
    config_maps = {o["metadata"]["name"]: o for o in k8s_objects("ConfigMap")}
    secrets = {o["metadata"]["name"]: o for o in k8s_objects("Secret")}
    container = worker_container()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] in config_maps
        if "secretRef" in source:
            assert source["secretRef"]["name"] in secrets
    for entry in container.get("env", []):
        reference = entry.get("valueFrom", {})
        if "secretKeyRef" in reference:
            ref = reference["secretKeyRef"]
            assert ref["key"] in secrets[ref["name"]]["stringData"]
        if "configMapKeyRef" in reference:
            ref = reference["configMapKeyRef"]
            assert ref["key"] in config_maps[ref["name"]]["data"]
    for volume in worker_pod()["spec"]["volumes"]:
        if "configMap" in volume:
            config_map = config_maps[volume["configMap"]["name"]]
            for item in volume["configMap"].get("items", []):
                assert item["key"] in config_map["data"]


def worker_environment() -> dict[str, str]:
    """Every variable the manifests give the worker, the Secret's from the example."""
    config_maps = {o["metadata"]["name"]: o["data"] for o in k8s_objects("ConfigMap")}
    secrets = {o["metadata"]["name"]: o["stringData"] for o in k8s_objects("Secret")}
    environment: dict[str, str] = {}
    for source in worker_container().get("envFrom", []):
        if "configMapRef" in source:
            environment.update(config_maps[source["configMapRef"]["name"]])
        if "secretRef" in source:
            environment.update(secrets[source["secretRef"]["name"]])
    for entry in worker_container().get("env", []):
        if "value" in entry:
            environment[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            environment[entry["name"]] = secrets[ref["name"]][ref["key"]]
        elif "configMapKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["configMapKeyRef"]
            environment[entry["name"]] = config_maps[ref["name"]][ref["key"]]
        else:
            raise AssertionError(f"unsupported env entry {entry}")
    for name, value in environment.items():
        assert isinstance(value, str), f"{name}: quote the value, Kubernetes wants strings"
    return environment


def test_manifests_set_only_real_settings() -> None:
    assert_real_settings(set(worker_environment()), "deploy/kubernetes")


def test_manifests_configure_every_setting_an_operator_sets() -> None:
    configured = {setting_env_names()[name] for name in worker_environment()}
    missing = set(Settings.model_fields) - configured - set(NOT_IN_MANIFESTS)
    assert not missing, (
        f"settings missing from deploy/kubernetes/configmap.yaml: {sorted(missing)} "
        "(add them, or to NOT_IN_MANIFESTS with the reason)"
    )


def test_manifest_settings_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = worker_environment()
    settings = settings_from(environment, monkeypatch)
    assert settings.web_host == "0.0.0.0"
    assert settings.kafka_bootstrap_servers and settings.redis_url
    assert settings.value_a_share + settings.value_b_share < 1
    mounts = {m["name"]: m["mountPath"] for m in worker_container()["volumeMounts"]}
    volumes = {v["name"]: v for v in worker_pod()["spec"]["volumes"]}
    definition_files = {
        PurePosixPath(mounts[name]) / item["path"]
        for name, volume in volumes.items()
        if "configMap" in volume and name in mounts
        for item in volume["configMap"]["items"]
    }
    assert PurePosixPath(settings.definitions_path.as_posix()) in definition_files


def definitions_text() -> str:
    return k8s_object("ConfigMap", "segworker-definitions")["data"]["definitions.yaml"]


def test_definitions_config_map_validates() -> None:
    definitions = load_definitions(definitions_text(), VOCABULARY)
    assert definitions.families


def test_definitions_config_map_is_the_shipped_default() -> None:
    assert definitions_text() == DEFAULT_DEFINITIONS.read_text(encoding="utf-8"), (
        "deploy/kubernetes/definitions-configmap.yaml differs from worker/config/definitions/"
        "default.yaml: copy it over (indented by four spaces)"
    )


# --- PromQL ---------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "inf", "nan"}


def check_balanced(expr: str) -> None:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack and stack.pop() == pairs[char], f"unbalanced {char!r} in {expr!r}"
    assert not stack, f"unclosed {stack} in {expr!r}"


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (not functions, labels, keywords or numbers)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges, subqueries, $__rate_interval
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # 1e3, 5m of an offset
            continue
        if text[match.end() :].lstrip().startswith("("):  # function or aggregation
            continue
        if match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="segworker"} == 0', {"up"}),
        ("sum by (topic) (segworker_consumer_lag) > 1e4", {"segworker_consumer_lag"}),
        (
            "histogram_quantile(0.99, sum by (instance, le) "
            "(rate(segworker_batch_seconds_bucket[5m]))) > 2.5",
            {"segworker_batch_seconds_bucket"},
        ),
        ('absent(up{job="a(b"}) or x_total offset 5m', {"up", "x_total"}),
        ("sum(rate(a_total[$__rate_interval])) by (kind) / ignoring(kind) b", {"a_total", "b"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    check_balanced(expr)
    assert metric_names(expr) == names


@pytest.mark.parametrize("expr", ["sum(rate(a[5m])", "a{b='c'", "rate(a[5m)]"])
def test_check_balanced_rejects(expr: str) -> None:
    with pytest.raises(AssertionError):
        check_balanced(expr)


def _sample_names(metric: Metric) -> set[str]:
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    }[metric.type]
    return {metric.name + suffix for suffix in suffixes}


@cache
def exposed_metrics() -> frozenset[str]:
    names: set[str] = set()
    for metric in Metrics().registry.collect():
        names |= _sample_names(metric)
    return frozenset(names)


def check_metrics(expr: str, where: str) -> set[str]:
    check_balanced(expr)
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    for name in names:
        assert name.startswith("segworker_") or name == "up", f"{where}: foreign metric {name}"
        assert name == "up" or name in exposed_metrics() | PENDING_METRICS, (
            f"{where}: {name} is not exposed by worker/runtime/metrics.py"
        )
    return names


def test_exposed_metrics_are_read_from_the_worker() -> None:
    assert {"segworker_events_total", "segworker_batch_seconds_bucket"} <= exposed_metrics()


# --- Prometheus -----------------------------------------------------------------------


@cache
def alert_rules() -> list[dict[str, Any]]:
    document = load_yaml(PROMETHEUS / "alerts.yml")
    assert set(document) == {"groups"}
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names))
    rules = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        assert group["rules"], f"group {group['name']} has no rules"
        rules.extend(group["rules"])
    return rules


def test_alert_rules_are_well_formed() -> None:
    names = []
    for rule in alert_rules():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
        names.append(rule["alert"])
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        assert DURATION.match(rule["for"]), f"{rule['alert']}: for {rule['for']!r}"
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        for key in ("summary", "description"):
            assert str(rule["annotations"][key]).strip(), f"{rule['alert']}: no {key}"
    assert len(names) == len(set(names)), "duplicate alert names"


def test_alert_expressions_use_worker_metrics() -> None:
    used: set[str] = set()
    for rule in alert_rules():
        used |= check_metrics(rule["expr"], f"alert {rule['alert']}")
    expected = {
        "up",
        "segworker_consumer_lag",
        "segworker_dead_letters_total",
        "segworker_retries_total",
        "segworker_batch_seconds_bucket",
        "segworker_segment_flaps_total",
        "segworker_drift_alarms_total",
    }
    assert expected <= used, f"no alert on {sorted(expected - used)}"


def test_every_alert_has_a_promtool_unit_test() -> None:
    tests = load_yaml(PROMETHEUS / "alerts.test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    untested = {rule["alert"] for rule in alert_rules()} - tested
    assert not untested, f"alerts.test.yml never sees these fire: {sorted(untested)}"


def test_prometheus_config_scrapes_the_workers() -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file(), f"rule file {rule_file} missing"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["segworker"]
    assert worker.get("metrics_path", "/metrics") == "/metrics"
    targets = [
        (name, discovery["port"])
        for discovery in worker.get("dns_sd_configs", [])
        for name in discovery["names"]
    ] + [
        tuple(target.rsplit(":", 1))
        for static in worker.get("static_configs", [])
        for target in static["targets"]
    ]
    assert targets
    for host, port in targets:
        assert host in services(), f"scrape target {host} is no compose service"
        assert int(port) == 6066
    selectors = {m for rule in alert_rules() for m in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert selectors <= set(jobs), f"alerts select unknown jobs {selectors - set(jobs)}"


# --- Grafana --------------------------------------------------------------------------


@cache
def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def panels() -> list[dict[str, Any]]:
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows
    return found


def test_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    assert dashboard()["uid"] and dashboard()["title"]
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), f"duplicate panel ids {ids}"
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_queries_use_worker_metrics() -> None:
    provisioned = {
        source["uid"]
        for source in load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")[
            "datasources"
        ]
    }
    used: set[str] = set()
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']} has no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in provisioned, panel["title"]
            used |= check_metrics(target["expr"], f"panel {panel['title']}")
            assert not (metric_names(target["expr"]) & {"up"}), panel["title"]
    expected = {
        "segworker_events_total",
        "segworker_dead_letters_total",
        "segworker_batch_seconds_bucket",
        "segworker_consumer_lag",
        "segworker_segment_changes_total",
        "segworker_segment_size",
        "segworker_segment_flaps_total",
        "segworker_drift_alarms_total",
    }
    assert expected <= used, f"no panel shows {sorted(expected - used)}"


def test_the_worker_reads_its_web_token_from_the_secret() -> None:
    env = {item["name"]: item for item in worker_container()["env"]}
    token = env["SEGWORKER_WEB_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token["name"] == "segworker-secrets" and not token.get("optional")
    example = k8s_object("Secret", "segworker-secrets")["stringData"]
    assert "SEGWORKER_WEB_TOKEN" in example


def test_the_network_policy_admits_only_the_web_port_to_the_worker() -> None:
    policy = k8s_object("NetworkPolicy", "segworker")
    pod_labels = worker_pod()["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = policy["spec"]["ingress"]
    ports = {port["port"] for port in rule["ports"]}
    container_ports = {port["name"] for port in worker_container()["ports"]}
    assert ports <= container_ports and rule["from"], "ingress must name who may connect"
    egress_ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert {53, 9092, 6379, 443} <= egress_ports
