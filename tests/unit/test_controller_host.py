"""The controllers' view of the supervisor (``runner.supervisor.ports.ControllerHost``) is what the
controllers use of it, and what a real ``Supervisor`` has.

A real ``Supervisor`` over a real SQLite ``Store`` (no Ray: nothing here ticks the fleet) is checked
member by member against the protocol: each attribute there with the annotated type, each method
with the protocol's parameters. The controllers' source is read for every ``self.sup.X`` and
``supervisor.X`` they use: each is in the protocol, and each member of the protocol is used (it
lists exactly what they need). A type checker holds the same line statically: the supervisor hands
itself to each controller, whose constructor takes a ``ControllerHost``.
"""

from __future__ import annotations

import ast
import inspect
import threading
import typing
from pathlib import Path

import pytest

from runner.core.demand import Demand
from runner.core.mounts import Mount
from runner.core.network import load_network
from runner.core.spec import AnySpec
from runner.core.states import WorkloadState
from runner.settings import Settings
from runner.store import Store, Workload
from runner.supervisor import Supervisor, gang, preempt, service, session
from runner.supervisor.cluster_view import ClusterView
from runner.supervisor.compliance import Compliance
from runner.supervisor.gang import GangController
from runner.supervisor.placing import Placing
from runner.supervisor.ports import ControllerHost
from runner.supervisor.replicas import ReplicaDriver
from runner.supervisor.session import SessionController
from runner.supervisor.training_events import TrainingEvents

#: The names the protocol's annotations use (imported there for type checkers only).
NAMES = {
    "AnySpec": AnySpec,
    "ClusterView": ClusterView,
    "Compliance": Compliance,
    "Demand": Demand,
    "GangController": GangController,
    "Mount": Mount,
    "Placing": Placing,
    "ReplicaDriver": ReplicaDriver,
    "Store": Store,
    "Workload": Workload,
    "WorkloadState": WorkloadState,
    "threading": threading,
}
ATTRIBUTES = typing.get_type_hints(ControllerHost, localns=NAMES)
METHODS = {
    name: value
    for name, value in vars(ControllerHost).items()
    if inspect.isfunction(value) and not name.startswith("_")
}
MEMBERS = set(ATTRIBUTES) | set(METHODS)


def _host(sup: Supervisor) -> ControllerHost:
    """A type checker run over the tests verifies this assignment (the structural match)."""
    return sup


@pytest.fixture
def sup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Supervisor:
    supervisor = Supervisor(Store(f"sqlite:///{tmp_path / 'runner.db'}"), Settings(home=tmp_path), load_network())
    monkeypatch.setattr(supervisor.cluster, "refresh", lambda force=False: None)  # no Ray here
    return supervisor


def test_the_protocol_names_attributes_and_methods() -> None:
    """(The reading of the protocol below finds what it declares, or the other checks prove nothing.)"""
    assert {"store", "driver", "cluster", "placing", "gangs", "changed"} <= set(ATTRIBUTES)
    assert {"spec", "demand", "move", "wake", "checkpoint_uri", "store_env", "mounts"} <= set(METHODS)


@pytest.mark.parametrize("name", sorted(ATTRIBUTES))
def test_a_supervisor_has_each_attribute_with_its_type(sup: Supervisor, name: str) -> None:
    assert isinstance(getattr(sup, name), ATTRIBUTES[name])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_supervisor_has_each_method_with_its_parameters(sup: Supervisor, name: str) -> None:
    method = getattr(sup, name)
    assert callable(method)
    wanted = list(inspect.signature(METHODS[name]).parameters.values())[1:]  # (less ``self``)
    have = list(inspect.signature(method).parameters.values())
    assert [(p.name, p.kind, p.default) for p in have] == [(p.name, p.kind, p.default) for p in wanted]


def _used_of_the_supervisor(module: object) -> set[str]:
    """Every ``self.sup.X`` and ``supervisor.X`` in a module's source."""
    used = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):  # type: ignore[arg-type]
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id == "supervisor":
            used.add(node.attr)
        elif (
            isinstance(owner, ast.Attribute)
            and owner.attr == "sup"
            and isinstance(owner.value, ast.Name)
            and owner.value.id == "self"
        ):
            used.add(node.attr)
    return used


def test_the_controllers_use_exactly_the_protocol() -> None:
    used = {module.__name__: _used_of_the_supervisor(module) for module in (gang, service, session, preempt)}
    beyond = {name: sorted(names - MEMBERS) for name, names in used.items() if names - MEMBERS}
    assert beyond == {}, "controllers use supervisor members the protocol does not name"
    assert set().union(*used.values()) == MEMBERS, "the protocol names members no controller uses"


def test_the_controllers_are_built_on_the_supervisor(sup: Supervisor) -> None:
    for controller in (sup.gangs, *sup.controllers.values(), sup.preemptor):
        assert controller.sup is sup


def test_a_session_controller_composes_the_gang_controller(sup: Supervisor) -> None:
    """It holds the supervisor's own gang controller rather than being (and re-building) one: the
    driver's training-events listener is registered once."""
    sessions = sup.controllers["gaming"]
    assert isinstance(sessions, SessionController)
    assert not isinstance(sessions, GangController)
    assert sessions.gang is sup.gangs is sup.controllers["batch"] is sup.controllers["training"]
    assert sum(isinstance(listener, TrainingEvents) for listener in sup.driver.report_listeners) == 1
