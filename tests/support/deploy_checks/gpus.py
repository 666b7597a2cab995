"""GPUs: what the manifests start against what the config's Ray work asks for."""

from __future__ import annotations

from deploy_checks.commands import Invocation, madmine_command, script_of
from deploy_checks.files import TRAIN_DRIVER_CPUS, Infra
from deploy_checks.kubernetes import ray_cluster_specs


def quantity(value) -> float:
    text = str(value)
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


def _limits(template: dict) -> dict:
    containers = ((template.get("spec") or {}).get("containers")) or [{}]
    resources = containers[0].get("resources") or {}
    return {**(resources.get("requests") or {}), **(resources.get("limits") or {})}


def gpu_need(config, command: str) -> tuple[float, str]:
    """GPUs a madmine command's Ray work asks for under `config`, and why."""
    s, f = config.scoring, config.finetune
    if command in ("score", "nightly"):
        return s.actors * s.num_gpus_per_actor, f"[scoring] actors {s.actors} x num_gpus_per_actor {s.num_gpus_per_actor}"
    if command == "finetune":
        n = f.num_workers * f.concurrent_trials if f.use_gpu else 0
        return n, f"[finetune] num_workers {f.num_workers} x concurrent_trials {f.concurrent_trials} (use_gpu {f.use_gpu})"
    return 0.0, "no GPU work"


def gpu_problems(infra: Infra, calls: list[Invocation], config) -> list[str]:
    """Each Ray cluster starts exactly the GPUs that the madmine commands it runs use, and
    each GPU worker pod has room (GPUs, CPUs) for whole scoring actors or training workers."""
    problems = []
    runs: dict[str, list[str]] = {}
    for call in calls:
        script = script_of(infra, call)
        if call.cluster and call.host == "image" and script:
            runs.setdefault(call.cluster, []).append(madmine_command(script))
    for label, spec, _ in ray_cluster_specs(infra):
        autoscaling = bool(spec.get("enableInTreeAutoscaling"))
        capacity = 0.0
        for group in spec.get("workerGroupSpecs") or []:
            name = group.get("groupName")
            replicas, low, high = group.get("replicas", 0), group.get("minReplicas", 0), group.get("maxReplicas")
            if not autoscaling and (low, high) != (replicas, replicas):
                problems.append(
                    f"infra/{label}: worker group {name}: minReplicas {low} / maxReplicas {high} without "
                    f"enableInTreeAutoscaling do nothing; the group runs replicas = {replicas} pods"
                )
            if autoscaling and not (low <= replicas <= (high if high is not None else replicas)):
                problems.append(f"infra/{label}: worker group {name}: replicas {replicas} outside [{low}, {high}]")
            limits = _limits(group.get("template") or {})
            gpus, cpus = quantity(limits.get("nvidia.com/gpu", 0)), quantity(limits.get("cpu", 0))
            pods = high if autoscaling else replicas
            capacity += pods * gpus
            if gpus:
                fit = _pod_fit(config, gpus, cpus, runs.get(label, []))
                problems += [f"infra/{label}: worker group {name}: {p}" for p in fit]
        head_gpus = quantity(_limits((spec.get("headGroupSpec") or {}).get("template") or {}).get("nvidia.com/gpu", 0))
        if head_gpus:
            problems.append(f"infra/{label}: the head asks for {head_gpus:g} GPUs; it runs the driver only")
        commands = runs.get(label, [])
        if not commands:
            problems.append(f"infra/{label}: runs no madmine command (nothing submits to it)")
            continue
        needs = {c: gpu_need(config, c) for c in commands}
        most = max(n for n, _ in needs.values())
        if capacity != most:
            detail = "; ".join(f"madmine {c}: {n:g} GPUs ({why})" for c, (n, why) in needs.items())
            kind = "at most" if autoscaling else ""
            problems.append(
                f"infra/{label}: starts {kind} {capacity:g} GPUs but its work uses {most:g} ({detail})".replace("  ", " ")
            )
    return problems


def _pod_fit(config, gpus: float, cpus: float, commands: list[str]) -> list[str]:
    problems = []
    s, f = config.scoring, config.finetune
    if {"score", "nightly"} & set(commands) and s.num_gpus_per_actor > 0:
        actors = gpus / s.num_gpus_per_actor
        if actors < 1 or actors != int(actors):
            problems.append(f"{gpus:g} GPUs per pod do not hold whole scoring actors of {s.num_gpus_per_actor:g} GPUs")
        elif cpus < actors * s.num_cpus_per_actor + 1:
            problems.append(
                f"{cpus:g} CPUs per pod leave no CPU to decode images beside {int(actors)} actors of "
                f"{s.num_cpus_per_actor:g} CPUs"
            )
    if "finetune" in commands and f.use_gpu:
        if gpus < 1 or gpus != int(gpus):
            problems.append(f"{gpus:g} GPUs per pod do not hold a Ray Train worker (1 GPU each)")
        elif cpus < gpus * f.cpus_per_worker + TRAIN_DRIVER_CPUS:
            problems.append(f"{cpus:g} CPUs per pod are fewer than {int(gpus)} Ray Train workers of {f.cpus_per_worker:g} CPUs")
    return problems
