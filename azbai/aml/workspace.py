"""``azbai.Workspace``: Azure ML's ``Workspace`` for the datastore how-to, on the laptop or on Azure ML.

``Workspace(path=None)`` is the local workspace (``./.azbai`` or ``$AZBAI_WORKSPACE``): blob containers live in the
Azurite emulator, file shares in directories, runs are local processes. ``Workspace.from_config()`` wraps
``azureml.core.Workspace.from_config()``: every call of this package then goes to Azure ML through the real SDK and
returns the SDK's own objects. ``Workspace.offline()`` is an Azure ML workspace that never contacts Azure: datastore
registrations and estimators build the real SDK objects (to inspect them), and nothing can be submitted.

>>> ws = Workspace()
>>> ds = ws.get_default_datastore()
>>> ds.name, ds.datastore_type
('workspaceblobstore', 'AzureBlob')
"""

from __future__ import annotations

import os
from typing import Any

from azbai.aml import datastore as local_datastores
from azbai.local.workspace import Workspace as LocalWorkspace


class Workspace:
    """A workspace: local (Azurite and directories) or an Azure ML one (``from_config``, ``offline``)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        """The local workspace at ``path`` (default: ``$AZBAI_WORKSPACE``, else ``./.azbai``); nothing is created yet."""
        self.local: LocalWorkspace | None = LocalWorkspace.resolve(path)
        #: the ``azureml.core.Workspace`` behind an Azure ML workspace; None for the local one
        self.azureml: Any = None
        #: an offline Azure ML workspace: objects are built, nothing is sent
        self.dry_run = False
        self.offline_datastores: dict[str, Any] = {}
        self.offline_default: str | None = None

    @classmethod
    def from_config(cls, path: str | None = None, auth: Any = None) -> Workspace:
        """The Azure ML workspace of ``config.json`` (``azureml.core.Workspace.from_config``); needs azureml."""
        from azbai.aml import remote

        return cls.from_azureml(remote.workspace_from_config(path, auth))

    @classmethod
    def from_azureml(cls, workspace: Any, *, dry_run: bool = False) -> Workspace:
        """Wrap an ``azureml.core.Workspace``; with ``dry_run`` registrations are built, not sent."""
        wrapped = cls.__new__(cls)
        wrapped.local = None
        wrapped.azureml = workspace
        wrapped.dry_run = dry_run
        wrapped.offline_datastores = {}
        wrapped.offline_default = None
        return wrapped

    @classmethod
    def offline(cls) -> Workspace:
        """An Azure ML workspace built offline (a fake token, no service): for building and inspecting objects."""
        from azbai.aml import remote

        return cls.from_azureml(remote.offline_workspace(), dry_run=True)

    @property
    def is_local(self) -> bool:
        """True for the local workspace."""
        return self.azureml is None

    @property
    def name(self) -> str:
        """The workspace's name (``local`` for the local one)."""
        return "local" if self.azureml is None else str(self.azureml.name)

    def local_workspace(self) -> LocalWorkspace:
        """The local workspace's directories; :class:`~azbai.errors.TargetError` for an Azure ML workspace."""
        if self.local is None:
            from azbai.errors import TargetError

            raise TargetError(f"workspace {self.name!r} is an Azure ML workspace, not a local one")
        return self.local

    def get_default_datastore(self) -> Any:
        """The default datastore (``workspaceblobstore`` unless :meth:`set_default_datastore` chose another)."""
        if self.azureml is not None:
            from azbai.aml import remote

            return remote.default_datastore(self)
        return local_datastores.default_datastore(self)

    def set_default_datastore(self, name: str) -> None:
        """Make the registered datastore ``name`` the default one."""
        if self.azureml is not None:
            from azbai.aml import remote

            remote.set_default_datastore(self, name)
            return
        local_datastores.set_default_datastore(self, name)

    @property
    def datastores(self) -> dict[str, Any]:
        """Every registered datastore, by name."""
        if self.azureml is not None:
            from azbai.aml import remote

            return remote.datastores(self)
        return local_datastores.datastores(self)

    def __repr__(self) -> str:
        if self.azureml is None:
            assert self.local is not None
            return f"Workspace(path={str(self.local.root)!r})"
        return f"Workspace.from_azureml({self.name!r}{', dry_run=True' if self.dry_run else ''})"
