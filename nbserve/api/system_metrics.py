"""TorchServe's system metrics: the host's CPU, memory and disk (and each GPU's memory), taken
when the server starts and every ``metric_time_interval`` seconds (60), as TorchServe takes
them, into ``ts_metrics.log`` (metrics_mode=log) and the metrics API's gauges.
``disable_system_metrics=true`` turns them off."""

from __future__ import annotations

import shutil
import threading

import psutil
import torch

from nbserve.logs import server_metric

#: The latest sample, for the metrics API: ``[(name, unit, value, dimensions)]``.
latest: list[tuple[str, str, float, dict[str, str]]] = []


def sample() -> list[tuple[str, str, float, dict[str, str]]]:
    """The host's figures now, with TorchServe's names and units."""
    memory = psutil.virtual_memory()
    disk = shutil.disk_usage("/")
    host = {"Level": "Host"}
    figures = [
        ("CPUUtilization", "percent", psutil.cpu_percent(), host),
        ("MemoryUsed", "MB", round(memory.used / 2**20, 1), host),
        ("MemoryAvailable", "MB", round(memory.available / 2**20, 1), host),
        ("MemoryUtilization", "percent", memory.percent, host),
        ("DiskUsage", "GB", round(disk.used / 2**30, 1), host),
        ("DiskUtilization", "percent", round(100 * disk.used / disk.total, 1), host),
        ("DiskAvailable", "GB", round(disk.free / 2**30, 1), host),
    ]
    if torch.cuda.is_available():
        for device in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(device)
            gpu = {"Level": "Host", "DeviceId": str(device)}
            figures += [("GPUMemoryUsed", "MB", round((total - free) / 2**20, 1), gpu),
                        ("GPUMemoryUtilization", "percent",
                         round(100 * (total - free) / total, 1), gpu)]
    return figures


class SystemMetrics:
    """Takes a sample now and every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, interval: float = 60):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nbserve-system-metrics",
                                        daemon=True)

    def start(self) -> SystemMetrics:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        global latest
        while True:
            latest = sample()
            for name, unit, value, dimensions in latest:
                server_metric(name, unit, value, dimensions)
            if self._stop.wait(self.interval):
                return
