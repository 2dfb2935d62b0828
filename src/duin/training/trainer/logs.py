"""The trainer's logs: ``metrics.jsonl`` (one record per epoch), TensorBoard events and
``train.log``.
"""

from __future__ import annotations

import json
import logging
from typing import Any


class _LogsMixin:
    """The trainer's logs: metrics.jsonl, TensorBoard events, train.log."""

    # ----------------------------------------------------------------------- logging

    def _open_logs(self, resumed_step: int | None) -> None:
        self._metrics_handle = None
        self._tb = None
        self._log_handler: logging.Handler | None = None
        if not self.dist.is_main:
            return
        self._metrics_handle = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        handler = logging.FileHandler(self.run_dir / "train.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        duin_logger = logging.getLogger("duin")
        duin_logger.addHandler(handler)
        # train.log always gets INFO; without a configured level nothing else changes (the
        # root logger's last-resort handler still shows warnings only).
        self._restore_level = duin_logger.level
        if duin_logger.level == logging.NOTSET:
            duin_logger.setLevel(logging.INFO)
        self._log_handler = handler
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events logged after the checkpoint by a killed process.
            purge = None if resumed_step is None else resumed_step + 1
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge)

    def _close_logs(self) -> None:
        if self._metrics_handle is not None:
            self._metrics_handle.close()
            self._metrics_handle = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._log_handler is not None:
            logging.getLogger("duin").removeHandler(self._log_handler)
            logging.getLogger("duin").setLevel(self._restore_level)
            self._log_handler.close()
            self._log_handler = None

    def _write_record(self, record: dict[str, Any]) -> None:
        if self._metrics_handle is not None:
            self._metrics_handle.write(json.dumps(record) + "\n")
            self._metrics_handle.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("epoch", "step", "best_epoch") and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, record["step"])
            self._tb.flush()

    def _read_history(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
