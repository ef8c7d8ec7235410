"""SIGTERM and SIGHUP raise the same interruption as Ctrl-C inside a sweep, with their own exit codes."""

from __future__ import annotations

import signal

import pytest

from orchestrator import signals


@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")])
def test_a_signal_in_the_block_is_a_keyboard_interrupt_with_its_own_exit_code(signum, code, name):
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt) as err:  # what the driver loop already stops on for Ctrl-C
        with signals.stopping_on_signals():
            signal.raise_signal(signum)
    assert isinstance(err.value, signals.Stopped) and err.value.signum == signum
    assert (signals.exit_code(err.value), signals.signal_name(err.value)) == (code, name)
    # Ray's C++ wait loop turns the exception into a plain KeyboardInterrupt: the number is not lost
    assert (signals.exit_code(KeyboardInterrupt()), signals.signal_name(KeyboardInterrupt())) == (code, name)
    assert signal.getsignal(signum) is before  # the previous handler is back


def test_after_the_first_signal_the_clean_up_is_not_cut_short():
    with pytest.raises(signals.Stopped):
        with signals.stopping_on_signals():
            try:
                signal.raise_signal(signal.SIGTERM)
            except signals.Stopped:
                signal.raise_signal(signal.SIGHUP)  # ignored while cleaning up
                signal.raise_signal(signal.SIGTERM)
                raise


def test_ctrl_c_is_130_and_a_new_block_forgets_an_old_signal():
    with pytest.raises(signals.Stopped):
        with signals.stopping_on_signals():
            signal.raise_signal(signal.SIGTERM)
    with signals.stopping_on_signals():
        pass
    assert (signals.exit_code(KeyboardInterrupt()), signals.signal_name(KeyboardInterrupt())) == (130, "Ctrl-C")
