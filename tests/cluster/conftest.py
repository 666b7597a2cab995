"""One multi-node Ray cluster on this machine for the tests of this folder (started only when
one of them runs): a head with no CPUs and worker nodes of one CPU each, that tests add and
kill while work runs."""

from __future__ import annotations

import os

import pytest

from multinode import Cluster

SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")


@pytest.fixture(scope="package")  # stopped when this folder is done, before other tests start clusters
def multinode():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SUPPORT, env.get("PYTHONPATH", "")])  # the test model factories
    cluster = Cluster(workers=2, env=env)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture()
def on_multinode(multinode):
    """The cluster with at least two live worker nodes, and the environment that drives it."""
    while len(multinode.workers) < 2:
        multinode.add()
    env = dict(multinode.env)
    env.update(RAY_ADDRESS=multinode.address, AWS_EC2_METADATA_DISABLED="true")
    return multinode, env
