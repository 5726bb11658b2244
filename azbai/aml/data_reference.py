"""``DataReference``: a datastore path given to a run, mounted, downloaded or uploaded (Azure ML v1's).

``str(ref)`` is ``$AZUREML_DATAREFERENCE_<name>``, as in Azure ML: put the reference (or that string) in a script's
arguments and the script gets the local path. What each mode becomes locally (see :mod:`azbai.local.runner`):

=========  ====================================================  ================================================
mode       blob container (Azurite)                              file share (a directory)
=========  ====================================================  ================================================
mount      a lazy FUSE mount of the path (files fetched when     the share's directory itself
           opened; else a mirror), written back after the run
download   a verified copy made before the run                   a verified copy made before the run
upload     an empty directory, uploaded after the run (also      the same
           after a failure)
=========  ====================================================  ================================================
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from azbai.errors import PlanError
from azbai.plan import model

if TYPE_CHECKING:
    from azbai.aml.datastore import Datastore

MODES = tuple(m.value for m in model.DataMode)
ENV_PREFIX = "AZUREML_DATAREFERENCE_"
_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,128}")


@dataclass(frozen=True)
class DataReferenceConfiguration:
    """What a run configuration records of a reference (Azure ML's ``DataReferenceConfiguration``)."""

    data_store_name: str
    path_on_data_store: str | None
    path_on_compute: str | None
    mode: str
    overwrite: bool = False


class DataReference:
    """A path on a datastore and how a run gets it: ``mount`` (default), ``download`` or ``upload``.

    With a datastore of an Azure ML workspace the constructor returns ``azureml.data.data_reference.DataReference``.
    """

    def __new__(
        cls,
        datastore: Datastore,
        data_reference_name: str | None = None,
        path_on_datastore: str | None = None,
        mode: str = "mount",
        path_on_compute: str | None = None,
        overwrite: bool = False,
    ) -> DataReference:
        from azbai.aml.datastore import Datastore

        if not isinstance(datastore, Datastore):
            from azbai.aml import remote

            return cast(
                DataReference,
                remote.data_reference(
                    datastore, data_reference_name, path_on_datastore, mode, path_on_compute, overwrite
                ),
            )
        return super().__new__(cls)

    def __init__(
        self,
        datastore: Datastore,
        data_reference_name: str | None = None,
        path_on_datastore: str | None = None,
        mode: str = "mount",
        path_on_compute: str | None = None,
        overwrite: bool = False,
    ) -> None:
        name = data_reference_name or uuid.uuid4().hex
        if not _NAME_RE.fullmatch(name):
            raise PlanError(f"invalid data reference name {name!r}: use letters, digits and underscores")
        if mode not in MODES:
            raise PlanError(f"data reference {name!r}: mode {mode!r} is not one of {', '.join(MODES)}")
        if path_on_compute is not None:
            parts = path_on_compute.replace("\\", "/").split("/")
            if path_on_compute.startswith("/") or ".." in parts:
                raise PlanError(
                    f"data reference {name!r}: path_on_compute {path_on_compute!r} must be relative, without '..'"
                )
        if path_on_datastore:
            stripped = path_on_datastore.strip("/")
            if stripped and any(part in ("", ".", "..") for part in stripped.split("/")):
                raise PlanError(
                    f"data reference {name!r}: path_on_datastore {path_on_datastore!r} has '.', '..' or empty parts"
                )
        self.datastore = datastore
        self.data_reference_name = name
        self.path_on_datastore = path_on_datastore
        self.mode = mode
        self.path_on_compute = path_on_compute
        self.overwrite = overwrite

    def _with(self, mode: str, path_on_compute: str | None, overwrite: bool) -> DataReference:
        return DataReference(
            self.datastore, self.data_reference_name, self.path_on_datastore, mode, path_on_compute, overwrite
        )

    def as_mount(self) -> DataReference:
        """The same path, mounted (read and written in place)."""
        return self._with("mount", None, self.overwrite)

    def as_download(self, path_on_compute: str | None = None, overwrite: bool = False) -> DataReference:
        """The same path, downloaded (verified) before the run."""
        return self._with("download", path_on_compute, overwrite)

    def as_upload(self, path_on_compute: str | None = None, overwrite: bool = False) -> DataReference:
        """The same path as an output: an empty directory for the run, uploaded after it (also after a failure)."""
        return self._with("upload", path_on_compute, overwrite)

    def path(self, path: str | None = None, data_reference_name: str | None = None) -> DataReference:
        """A reference to ``path`` below this one, on the same datastore."""
        joined = "/".join(p.strip("/") for p in (self.path_on_datastore, path) if p)
        return DataReference(self.datastore, data_reference_name, joined or None, self.mode)

    def to_config(self) -> DataReferenceConfiguration:
        """What a run configuration keeps of this reference (for ``run_config.data_references``)."""
        return DataReferenceConfiguration(
            self.datastore.name, self.path_on_datastore, self.path_on_compute, self.mode, self.overwrite
        )

    def plan_reference(self) -> model.DataReference:
        """This reference as a plan data reference."""
        return model.DataReference(
            self.data_reference_name,
            self.datastore.name,
            (self.path_on_datastore or "").strip("/"),
            model.DataMode(self.mode),
            self.path_on_compute,
            self.overwrite,
        )

    def __str__(self) -> str:
        return f"${ENV_PREFIX}{self.data_reference_name}"

    def __repr__(self) -> str:
        return (
            f"DataReference(datastore={self.datastore.name!r}, data_reference_name={self.data_reference_name!r}, "
            f"path_on_datastore={self.path_on_datastore!r}, mode={self.mode!r}, "
            f"path_on_compute={self.path_on_compute!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataReference) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[Any, ...]:
        return (
            self.datastore.name,
            self.data_reference_name,
            (self.path_on_datastore or "").strip("/"),
            self.mode,
            self.path_on_compute,
            self.overwrite,
        )
