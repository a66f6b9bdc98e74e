import io

from mbbench.progress import progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_disabled_writes_nothing():
    for stream in (FakeTerminal(), io.StringIO()):
        with progress_bar(4, "passes", enabled=False, stream=stream) as bar:
            for _ in range(4):
                bar.advance(model="a")
            bar.write("hello")
        assert stream.getvalue() == "" and bar.count == 4 and not bar.enabled


def test_off_a_terminal_progress_is_plain_lines_never_bar_frames():
    stream = io.StringIO()  # a pipe or a log: issue 27 item 4 (a piped run printed nothing for minutes)
    with progress_bar(3, "passes", stream=stream) as bar:
        bar.write("[model / suite] building")
        for _ in range(3):
            bar.advance(seconds="1.000")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[model / suite] building"
    assert lines[-1].startswith("passes: 3/3 [") and "seconds=1.000" in lines[-1]  # the last is always written
    assert "\r" not in stream.getvalue() and "%|" not in stream.getvalue()


def test_enabled_on_a_terminal_advances_to_total():
    stream = FakeTerminal()
    with progress_bar(3, "paired passes", stream=stream) as bar:
        bar.advance()
        bar.advance(2, model="modernbert-base", tokens_per_s="12,345")
        bar.write("a note")
    out = stream.getvalue()
    assert bar.enabled and bar.count == 3
    assert "paired passes" in out and "3/3" in out and "100%" in out and "ETA" in out
    assert "model=modernbert-base" in out and "a note" in out


def test_unknown_total():
    stream = FakeTerminal()
    with progress_bar(None, "probing", stream=stream) as bar:
        bar.advance(5)
    assert "probing: 5" in stream.getvalue() and "ETA" not in stream.getvalue()


def test_a_silent_step_says_it_is_still_at_work():
    """Issue 34 item 9: an engine's export and compile ran 80-136 s without a line."""
    import threading

    from mbbench.progress import heartbeat

    said, beat = [], threading.Event()

    def say(message):
        said.append(message)
        beat.set()

    with heartbeat(say, "still preparing engine onnxruntime", every_s=0.01):
        assert beat.wait(10)  # the body waits for a beat: no timing asserted
    assert said[0].startswith("still preparing engine onnxruntime: ") and said[0].endswith(" s so far")
    with heartbeat(None, "nothing"):  # no one to tell: no thread, nothing said
        pass
