"""Publishing a packed folder on the Hugging Face Hub (see docs/publishing.md).

- `plan`: pure: which files to add, skip and delete; Hub limits; remote verification rules.
- `hub`: every Hub call (each takes an `HfApi`), error translation and redaction.
- `repo_card`: the dataset card re-rendered for the target repo.
- `upload`: the resumable upload flow, dry run, stale files, verification of the Hub copy.
- `push`: pack + verify + upload in one call (`sousa-wds push`).
"""

from .plan import FileSpec, RemoteFile, RemoteState, RepoShape, UploadPlan, plan_upload
from .push import PushResult, push
from .upload import UploadResult, upload, verify_remote

__all__ = ["FileSpec", "PushResult", "RemoteFile", "RemoteState", "RepoShape", "UploadPlan",
           "UploadResult", "plan_upload", "push", "upload", "verify_remote"]
