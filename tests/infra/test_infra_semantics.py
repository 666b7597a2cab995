"""infra/ must not drift from the code: every entry point, flag, path and config key that a
deployment file names exists; the config is where the driver reads it; the GPUs started
match what the config's Ray work uses; the VM cluster starts its workers; every nightly
path runs at the same UTC time. Each check is also shown to fail on a broken copy."""

from __future__ import annotations

import re

import pytest

from deploy_checks.commands import entry_point_problems, flag_problems, invocations, madmine_command, script_of, submit_problems
from deploy_checks.copies import InfraCopy, crontab_install_problems, overlap_problems
from deploy_checks.files import CONFIG_FILE, REPO, load_infra
from deploy_checks.gpus import gpu_problems
from deploy_checks.images import dockerfile_problems, runtime_env_problems
from deploy_checks.launcher import launcher_start_problems
from deploy_checks.paths import mentioned_path_problems, mount_problems
from deploy_checks.schedules import nightly_times
from madmine.config import ConfigError, load_config

DEPLOY_DOC = REPO / "docs" / "deploy.md"


@pytest.fixture(scope="module")
def infra():
    return load_infra()


@pytest.fixture(scope="module")
def calls(infra):
    found, problems = invocations(infra)
    assert problems == []
    return found


@pytest.fixture(scope="module")
def config():
    return load_config(REPO / CONFIG_FILE)


def test_every_deployment_runs_an_entry_point(infra, calls):
    commands = {(call.host, madmine_command(script_of(infra, call))) for call in calls}
    assert commands == {("image", "score"), ("image", "finetune"), ("image", "nightly"), ("vm", "nightly")}
    assert len(calls) == 5  # score, finetune, RayCronJob nightly, CronJob nightly, crontab nightly


def test_entry_points_exist_and_read_the_mounted_config(infra, calls):
    assert entry_point_problems(infra, calls) == []


def test_entry_points_accept_their_arguments(infra, calls):
    assert flag_problems(infra, calls) == []


def test_submissions_reach_the_cluster_that_runs_them(infra, calls):
    assert submit_problems(infra, calls) == []


def test_the_gpu_config_loads_with_every_key_known(config):
    # parse_config refuses unknown keys; s3:// weights and folders are not looked up (no network)
    assert config.workspace_uri.startswith("s3://")
    assert config.scoring.actors > 0 and config.scoring.num_gpus_per_actor > 0 and config.scoring.device == "cuda"
    assert config.finetune.use_gpu
    assert all(m.weights.startswith("s3://") for m in config.models if m.is_network)


def test_gpus_started_match_the_gpus_used(infra, calls, config):
    assert gpu_problems(infra, calls, config) == []


def test_the_vm_cluster_starts_its_workers(infra):
    assert launcher_start_problems(infra.cluster) == []


def test_the_vm_cluster_installs_the_nightly_crontab(infra, tmp_path):
    assert crontab_install_problems(infra) == []
    broken = InfraCopy(tmp_path).edit_text("cluster.yaml", "  - crontab ~/madmine/crontab\n", "  - echo no crontab\n").load()
    assert crontab_install_problems(broken) == [
        "infra/cluster.yaml: head_setup_commands does not install ~/madmine/crontab (crontab FILE)"
    ]


def test_nightly_runs_do_not_overlap_nor_start_idle_gpus(infra):
    assert overlap_problems(infra) == []


@pytest.mark.parametrize(
    "rel, old, new, expected",
    [
        ("kuberay/raycronjob-nightly.yaml", "activeDeadlineSeconds: 79200", "activeDeadlineSeconds: 90000", "within the day"),
        ("kuberay/raycronjob-nightly.yaml", "          replicas: 0\n", "          replicas: 4\n", "starts GPUs before"),
        ("kuberay/raycronjob-nightly.yaml", "enableInTreeAutoscaling: true", "enableInTreeAutoscaling: false", "starts GPUs"),
        ("kuberay/cronjob-nightly.yaml", "concurrencyPolicy: Forbid", "concurrencyPolicy: Allow", "not Forbid"),
    ],
)
def test_overlapping_or_idle_gpu_nights_fail(tmp_path, rel, old, new, expected):
    infra = InfraCopy(tmp_path).edit_text(rel, old, new).load()
    assert any(expected in p for p in overlap_problems(infra)), overlap_problems(infra)


def test_every_nightly_path_runs_at_the_same_utc_time(infra):
    times, problems = nightly_times(infra)
    assert problems == []
    assert len(times) == 3 and len(set(times.values())) == 1, times


def test_the_image_holds_what_the_manifests_run(infra):
    assert dockerfile_problems(infra) == []
    assert mount_problems(infra) == []


def test_the_runtime_env_ships_madmine_and_its_pins(infra):
    assert runtime_env_problems(infra) == []


def test_paths_named_anywhere_exist(infra):
    texts = {**infra.texts(), "docs/deploy.md": DEPLOY_DOC.read_text()}
    assert mentioned_path_problems(texts, REPO) == []
    named = {m for text in texts.values() for m in re.findall(r"ray_jobs/\w+\.py", text)}
    assert named and all((REPO / rel).is_file() for rel in named), named


def test_the_deploy_doc_sets_up_what_the_manifests_expect(infra):
    doc = DEPLOY_DOC.read_text()
    assert f"--from-file=madmine.toml={CONFIG_FILE}" in doc  # the ConfigMap the manifests mount
    assert "madmine-s3" in doc  # the Secret they read credentials from
    assert "v1.7.0" in doc and "RayCronJob=true" in doc  # operator version and feature gate
    for name in [*infra.manifests, "cluster.yaml", "crontab", "Dockerfile", "runtime_env.yaml", "madmine.gpu.toml"]:
        assert f"infra/{name}" in doc, f"docs/deploy.md does not explain infra/{name}"


# ---- the checks fail on broken copies -------------------------------------------------


def _problems(infra, check):
    found, problems = invocations(infra)
    return problems + check(infra, found)


@pytest.mark.parametrize(
    "rel, old, new, expected",
    [
        ("kuberay/rayjob-score.yaml", "ray_jobs/score_job.py", "ray_jobs/score.py", "does not exist"),
        ("kuberay/cronjob-nightly.yaml", "/opt/madmine/ray_jobs/nightly_job.py", "ray_jobs/nightly_job.py", "not put on"),
        ("crontab", "~/madmine/ray_jobs/nightly_job.py", "~/madmine/ray_jobs/nightly.py", "does not exist"),
        ("crontab", "~/madmine-venv/bin/python ~/madmine", "python3 ~/madmine", "not '~/madmine-venv/bin/python'"),
        ("kuberay/rayjob-finetune.yaml", "--config /etc/madmine/madmine.toml", "--config /etc/madmine.toml", "does not mount"),
        ("kuberay/raycluster.yaml", "mountPath: /etc/madmine,", "mountPath: /etc/madmine-config,", "does not mount"),
        ("kuberay/cronjob-nightly.yaml", "//madmine-head-svc:8265", "//madmine-svc:8265", "head service of no RayCluster"),
    ],
)
def test_a_missing_entry_point_or_config_fails(tmp_path, rel, old, new, expected):
    infra = InfraCopy(tmp_path).edit_text(rel, old, new).load()
    problems = _problems(infra, entry_point_problems)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "rel, old, new, flag",
    [
        ("kuberay/rayjob-finetune.yaml", "--round 1", "--rounds 1", "--rounds"),
        ("kuberay/rayjob-score.yaml", "madmine.toml\n", "madmine.toml --max-errors 0.1\n", "--max-errors"),
        ("crontab", "--config ~/madmine/madmine.toml", "--config ~/madmine/madmine.toml --resume", "--resume"),
    ],
)
def test_an_unknown_madmine_flag_fails(tmp_path, rel, old, new, flag):
    infra = InfraCopy(tmp_path).edit_text(rel, old, new).load()
    problems = _problems(infra, flag_problems)
    assert any(f"No such option: {flag}" in p and "is refused" in p for p in problems), problems


def test_an_unknown_job_submit_option_fails(tmp_path):
    infra = InfraCopy(tmp_path).edit_text("crontab", "--address http", "--adress http").load()
    problems = _problems(infra, submit_problems)
    assert any("no option --adress" in p for p in problems), problems


def test_a_path_named_in_a_comment_must_exist(tmp_path):
    copy = InfraCopy(tmp_path).edit_text("cluster.yaml", "ray_jobs/nightly_job.py --config", "ray_jobs/nightly.py --config")
    infra = copy.load()
    problems = mentioned_path_problems(infra.texts(), REPO)
    assert problems == ["infra/cluster.yaml names ray_jobs/nightly.py, which does not exist"]


@pytest.mark.parametrize(
    "rel, old, new, expected",
    [
        ("kuberay/rayjob-score.yaml", "replicas: 4 ", "replicas: 8 ", "maxReplicas 4 without enableInTreeAutoscaling"),
        ("kuberay/rayjob-score.yaml", "nvidia.com/gpu: 1", "nvidia.com/gpu: 2", "starts 8 GPUs but its work uses 4"),
        ("kuberay/raycronjob-nightly.yaml", "maxReplicas: 4", "maxReplicas: 16", "starts at most 16 GPUs but its work uses 4"),
        ("kuberay/raycluster.yaml", "maxReplicas: 4", "maxReplicas: 2", "starts at most 2 GPUs but its work uses 4"),
        ("kuberay/rayjob-finetune.yaml", '{cpu: "8", memory: 32Gi', '{cpu: "2", memory: 32Gi', "fewer than 1 Ray Train worker"),
        ("kuberay/rayjob-score.yaml", '{cpu: "8", memory: 32Gi', '{cpu: "2", memory: 32Gi', "no CPU to decode"),
    ],
)
def test_gpus_that_do_not_match_the_config_fail(tmp_path, config, rel, old, new, expected):
    infra = InfraCopy(tmp_path).edit_text(rel, old, new).load()
    problems = _problems(infra, lambda i, c: gpu_problems(i, c, config))
    assert any(expected in p for p in problems), problems


def test_a_config_without_gpu_actors_fails_the_gpu_check(tmp_path, infra, calls):
    copy = InfraCopy(tmp_path).edit_text("madmine.gpu.toml", "num_gpus_per_actor = 1.0", "num_gpus_per_actor = 0.0")
    problems = gpu_problems(infra, calls, load_config(copy.root / "madmine.gpu.toml"))
    assert any("its work uses 0" in p for p in problems), problems


def test_a_config_with_an_unknown_key_fails(tmp_path):
    copy = InfraCopy(tmp_path).edit_text("madmine.gpu.toml", "num_gpus_per_actor =", "gpus_per_actor =")
    with pytest.raises(ConfigError, match="gpus_per_actor"):
        load_config(copy.root / "madmine.gpu.toml")


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (" --autoscaling-config=~/ray_bootstrap_config.yaml", "", "lacks --autoscaling-config"),
        ("--dashboard-port=8265", "--dashboard-port=8265 --dashbord-host=0.0.0.0", "no option --dashbord-host"),
        ("--address=$RAY_HEAD_IP:6379", "--address=$RAY_HEAD_IP:6380", "must join $RAY_HEAD_IP:6379"),
    ],
)
def test_a_cluster_that_would_not_start_its_workers_fails(tmp_path, old, new, expected):
    infra = InfraCopy(tmp_path).edit_text("cluster.yaml", old, new).load()
    problems = launcher_start_problems(infra.cluster)
    assert any(expected in p for p in problems), problems


def test_a_crontab_in_local_time_fails(tmp_path):
    line = next(x for x in (REPO / "infra" / "crontab").read_text().splitlines() if x.startswith("*"))
    command = line.split("&& ", 1)[1]
    infra = InfraCopy(tmp_path).edit_text("crontab", line, f"0 2 * * *  {command}").load()
    _, problems = nightly_times(infra)
    assert any("local time zone" in p for p in problems), problems
    utc = InfraCopy(tmp_path / "utc").edit_text("crontab", line, f"CRON_TZ=UTC\n0 2 * * *  {command}").load()
    assert nightly_times(utc)[1] == []


def test_a_nightly_schedule_at_another_time_or_zone_is_seen(tmp_path):
    paris = 'timeZone: "Europe/Paris"'
    infra = InfraCopy(tmp_path).edit_text("kuberay/cronjob-nightly.yaml", 'timeZone: "Etc/UTC"', paris).load()
    assert any("timeZone 'Europe/Paris'" in p for p in nightly_times(infra)[1])
    other = InfraCopy(tmp_path / "b").edit_text("kuberay/raycronjob-nightly.yaml", '"0 2 * * *"', '"0 3 * * *"').load()
    times, problems = nightly_times(other)
    assert problems == [] and len(set(times.values())) == 2


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ('"torch==2.13.0"', '"torch==2.12.0"', "installs torch==2.12.0"),
        ("rayproject/ray:2.60.0-py311-gpu", "rayproject/ray:2.59.0-py311-gpu", "Ray 2.59.0"),
        ("COPY --chown=ray:users ray_jobs ./ray_jobs\n", "", "does not copy ray_jobs"),
        ('${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} ', "", "does not use it"),
    ],
)
def test_a_dockerfile_that_drifts_fails(tmp_path, old, new, expected):
    infra = InfraCopy(tmp_path).edit_text("Dockerfile", old, new).load()
    assert any(expected in p for p in dockerfile_problems(infra)), dockerfile_problems(infra)


def test_a_runtime_env_that_drifts_fails(tmp_path):
    infra = InfraCopy(tmp_path).edit_text("runtime_env.yaml", '    - "duckdb==2.0.0"\n', "").load()
    assert any("duckdb" in p for p in runtime_env_problems(infra))
    infra = InfraCopy(tmp_path / "b").edit_text("runtime_env.yaml", "py_modules:", "py_module:").load()
    assert any("py_module" in p for p in runtime_env_problems(infra))
