"""Checks of the deployment files in infra/, shared by the infra tests.

Every check is a function that takes the loaded files (`Infra`) and returns a list of
problems (empty: fine), so that a test can run it on the real files and on a broken copy.
Schemas come from tests/infra/schemas/ (vendored upstream files, see its README), from
kubernetes-validate (Kubernetes' built-in kinds) and from the installed Ray wheel.
"""
