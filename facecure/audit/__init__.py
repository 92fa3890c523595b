"""`facecure audit`: a person checks, on their own machine, whether their protected photos
still protect them: their posted photos in a gallery among distractor identities, other photos
of them searched in it by every real model, after what platforms do to photos, beside the
unprotected originals. Nothing leaves the machine.

    from facecure.audit import AuditInput, run_audit, write_report
    result = run_audit(AuditInput(posted="posted/", probe="probe/", clean="originals/"))
    write_report(result, Path("outputs/audit/me"), "facecure audit ...")
"""
from facecure.audit.report import verdict_json, write_report
from facecure.audit.run import AuditInput, run_audit
from facecure.audit.search import SearchResult, search_person

__all__ = ["AuditInput", "SearchResult", "run_audit", "search_person", "verdict_json",
           "write_report"]
