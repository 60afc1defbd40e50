"""Where results go: an MQTT publisher with an on-disk outbox, and the payload formats (JSON
events/state/availability, Alibaba Cloud IoT Platform's Alink thing model, Home Assistant
discovery). Device-side: no TensorFlow; paho-mqtt is imported only when a reporter connects.

    from mltool.report import MqttOptions, MqttReporter

    reporter = MqttReporter(MqttOptions(url="mqtt://broker.local/home", device="pi-kitchen").resolve())
    reporter.connect()
    run_infer(cfg, on_start=reporter.start, on_result=reporter.result, on_event=reporter.event)
    reporter.close()
"""

from __future__ import annotations

from mltool._lazy import lazy_getattr

_EXPORTS = {
    "MqttOptions": "mltool.report.config",
    "MqttConfig": "mltool.report.config",
    "ReportError": "mltool.report.config",
    "MqttReporter": "mltool.report.reporter",
    "Reporter": "mltool.report.reporter",
    "Outbox": "mltool.report.outbox",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
