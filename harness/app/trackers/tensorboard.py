"""TensorBoard: one event file per cell and segment under RESULTS/logs/tb/<label> <cell id>/.

The harness opens the event file itself (`fsio.open_new`: a new file, never through a link in
the results folder) and tensorboard's own `RecordWriter` frames the records in it; the events
are tensorboard's protocol buffers, so `tensorboard --logdir RESULTS/logs/tb` reads them as
any writer's. Each segment of a cell (a first run, a resume after a pause or a kill, a rerun
with --force) starts with a session-start event at its first step: TensorBoard then drops what
an earlier segment wrote at that step or later, so every epoch shows once.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.summary.writer.record_writer import RecordWriter

from harness.app.trackers import TrackedRun, safe_name
from harness.fsio import open_new

_FILES = itertools.count()  # two writers of one process in one second get two names


def open_run(run: TrackedRun) -> TensorBoardRun:
    return TensorBoardRun(run)


class TensorBoardRun:
    def __init__(self, run: TrackedRun) -> None:
        self.run = run
        self.folder = run.logs / "tb" / safe_name(run.name)
        self.writer: RecordWriter | None = None
        self.last = 0

    def _open(self, step: int | None) -> RecordWriter:
        """The event file, made at the first step this segment logs (that step starts it;
        None: a summary alone, which replaces nothing)."""
        name = (
            f"events.out.tfevents.{time.time():.6f}.{safe_name(socket.gethostname())}."
            f"{os.getpid()}.{next(_FILES)}"
        )
        writer = RecordWriter(open_new(self.folder / name, inside=self.run.inside))
        self.writer = writer
        self._event(Event(file_version="brain.Event:2"))
        if step is not None:  # steps from `step` on replace what an earlier segment wrote
            self._event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
        config = json.dumps(dict(self.run.config), sort_keys=True, indent=2)
        self._event(Event(step=0, summary=Summary(value=[_text("config", config)])))
        return writer

    def _event(self, event: Event) -> None:
        assert self.writer is not None
        event.wall_time = time.time()
        self.writer.write(event.SerializeToString())

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if self.writer is None:
            self._open(step)
        scalars = [Summary.Value(tag=k, simple_value=v) for k, v in values.items()]
        self._event(Event(step=step, summary=Summary(value=scalars)))
        assert self.writer is not None
        self.writer.flush()  # a dashboard open now sees the epoch now
        self.last = step

    def finish(self, summary: Mapping[str, Any] | None) -> None:
        if summary is not None:
            if self.writer is None:
                self._open(None)
            numbers = {k: v for k, v in summary.items() if not isinstance(v, str)}
            words = {k: v for k, v in summary.items() if isinstance(v, str)}
            values = [Summary.Value(tag=f"run/{k}", simple_value=v) for k, v in numbers.items()]
            values.append(_text("run", json.dumps(words, sort_keys=True, indent=2)))
            self._event(Event(step=self.last, summary=Summary(value=values)))
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _text(tag: str, text: str) -> Summary.Value:
    """A text summary (TensorBoard's text dashboard), shown as markdown in a code block."""
    tensor = TensorProto(
        dtype=7,  # DT_STRING
        string_val=[f"```\n{text}\n```".encode()],
        tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]),
    )
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
    return Summary.Value(tag=tag, metadata=meta, tensor=tensor)
