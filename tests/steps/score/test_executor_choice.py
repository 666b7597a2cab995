"""Which executor `madmine score` uses: Ray where there is a cluster or several actors,
else the same shard worker in this process."""

import pytest
import ray

from madmine.errors import MadmineError
from madmine.placement import resolve_executor


def test_auto_scores_in_this_process_on_one_machine_with_one_actor(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # another test may have connected this process
    assert resolve_executor("auto", None, actors=1) == "local"


def test_auto_uses_the_ray_this_process_is_connected_to(monkeypatch):
    """A Ray job's driver, or a process that started Ray for fine-tuning, scores on that Ray."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    assert resolve_executor("auto", None, actors=1) == "ray"


@pytest.mark.parametrize("address, env, actors", [("ray://head:10001", None, 1), (None, "127.0.0.1:6379", 1), (None, None, 2)])
def test_auto_uses_ray_for_a_cluster_or_several_actors(monkeypatch, address, env, actors):
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_executor("auto", address, actors=actors) == "ray"


def test_an_explicit_executor_is_kept(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert resolve_executor("local", None, actors=4) == "local"
    assert resolve_executor("ray", None, actors=1) == "ray"


def test_an_unknown_executor_is_refused():
    with pytest.raises(MadmineError, match="unknown executor 'spark'"):
        resolve_executor("spark", None, actors=1)
