"""Three slips mypy --strict must catch through the stubs (line numbers are pinned)."""
from ward.messages import AuditEntry, VitalsReading
from ward.routing import make_bus

bus = make_bus()
bus.emit_pager_alert(VitalsReading(bed=1, heart_rate=60, spo2=99, temp_c=36.6))
bus.emit_audit_entry(AuditEntry(line="no route for this one"))
bus.emit(AuditEntry(line="nor through emit"))
