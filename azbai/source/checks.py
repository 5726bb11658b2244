"""Checks that span fields: one toolkit, unique ids, consistent credentials, storage names, ``$VAR`` references."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from azbai.source.diagnostics import Collector, describe_value, did_you_mean, has_sas_token, join_path
from azbai.source.model import (
    TOOLKIT_KEYS,
    AzureBlobFileSystemReference,
    AzureFileShareReference,
    CaffeSettings,
    CNTKsettings,
    ContainerSettings,
    EnvironmentVariable,
    FileServerReference,
    JobProperties,
    MountVolumes,
    SecretVariable,
    SetupTask,
    StorageCredentials,
    TensorFlowSettings,
    UnmanagedFileSystemReference,
)
from azbai.source.storage_names import (
    ACCOUNT_PLACEHOLDER,
    KEY_PLACEHOLDER,
    account_name_problem,
    container_name_problem,
    parse_file_share_url,
)
from azbai.source.variables import (
    AZURE_BATCH_VARIABLES,
    BATCHAI_VARIABLES,
    SHELL_VARIABLES,
    UNRELIABLE_VARIABLES,
    input_variable,
    output_variable,
    references,
)
from azbai.source.walker import Walker

_TOOLKIT_LIST = ", ".join(TOOLKIT_KEYS)


def check_job(props: JobProperties, walker: Walker, base: str, collector: Collector) -> None:
    """Run every cross-field check on a job's properties."""
    _check_toolkit(props, walker, base, collector)
    _check_unique(
        collector, ((d.id, walker.path_of(d) + ".id") for d in props.input_directories), "input directory id"
    )
    _check_unique(
        collector,
        ((d.id, walker.path_of(d) + ".id") for d in props.output_directories),
        "output directory id",
    )
    variables: list[EnvironmentVariable | SecretVariable] = [*props.environment_variables, *props.secrets]
    names = [(v.name, walker.path_of(v) + ".name") for v in variables]
    _check_unique(collector, names, "environment variable name")
    for name, path in names:
        if name in BATCHAI_VARIABLES or name.startswith(("AZ_BATCHAI_INPUT_", "AZ_BATCHAI_OUTPUT_")):
            collector.error(
                path, "reserved-name", f"'{name}' is set by Batch AI itself and cannot be redefined"
            )
    for variable in props.environment_variables:
        value_path = walker.path_of(variable) + ".value"
        if variable.value is None and value_path not in walker.rejected:
            collector.error(value_path, "missing-key", "required key 'value' is missing")
    for secret in props.secrets:
        _check_secret(secret, walker, collector)
    if props.mount_volumes is not None:
        check_mount_volumes(props.mount_volumes, walker, collector)
    if props.container_settings is not None:
        _check_container(props.container_settings, walker, collector)
    if (
        props.std_out_err_path_prefix is None
        and join_path(base, "stdOutErrPathPrefix") not in walker.rejected
    ):
        collector.error(
            join_path(base, "stdOutErrPathPrefix"),
            "missing-key",
            "required key 'stdOutErrPathPrefix' is missing (the Batch AI service required it), "
            'e.g. "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"',
        )
    if props.node_count is None and join_path(base, "nodeCount") not in walker.rejected:
        collector.warning(join_path(base, "nodeCount"), "default", "'nodeCount' is missing; using 1")
    _check_placeholders_elsewhere(props, walker, base, collector)
    _check_references(props, walker, base, collector)
    _check_sas_tokens(props, walker, collector)


def check_setup_task(task: SetupTask, walker: Walker, collector: Collector) -> None:
    """A cluster's setup task: a SAS token in its command line or variables."""
    path = walker.path_of(task)
    texts = [(path + ".commandLine", task.command_line)]
    texts += [(walker.path_of(v) + ".value", v.value) for v in task.environment_variables if v.value]
    _warn_sas_tokens(texts, collector)


def _check_sas_tokens(props: JobProperties, walker: Walker, collector: Collector) -> None:
    """A SAS token written into a command line, a path or a variable is copied as it is: say so, never quoting it."""
    texts = list(shell_fields(props, walker))
    for variable in props.environment_variables:
        if variable.value is not None:
            texts.append((walker.path_of(variable) + ".value", variable.value))
    _warn_sas_tokens(texts, collector)


def _warn_sas_tokens(texts: Iterable[tuple[str, str]], collector: Collector) -> None:
    for path, text in texts:
        if has_sas_token(text):
            collector.warning(
                path,
                "sas-token",
                "holds a SAS token (a URL with sig=…): azbai copies it as it is into the generated code, the "
                "plan and the local job; keep it in 'secrets' (a secret variable) instead",
            )


def check_mount_volumes(volumes: MountVolumes, walker: Walker, collector: Collector) -> None:
    """Storage names, URLs, credentials and unique mount paths of one ``mountVolumes`` object."""
    mounts: list[
        AzureFileShareReference
        | AzureBlobFileSystemReference
        | FileServerReference
        | UnmanagedFileSystemReference
    ] = [
        *volumes.azure_file_shares,
        *volumes.azure_blob_file_systems,
        *volumes.file_servers,
        *volumes.unmanaged_file_systems,
    ]
    paths = [(v.relative_mount_path.strip("/"), walker.path_of(v) + ".relativeMountPath") for v in mounts]
    _check_unique(collector, paths, "relativeMountPath")
    for share in volumes.azure_file_shares:
        _check_file_share(share, walker, collector)
    for blob in volumes.azure_blob_file_systems:
        _check_blob(blob, walker, collector)


def _check_toolkit(props: JobProperties, walker: Walker, base: str, collector: Collector) -> None:
    present = [key for key, attr in TOOLKIT_KEYS.items() if getattr(props, attr) is not None]
    if not present:
        collector.error(
            base or "properties",
            "no-toolkit",
            f"the job has no toolkit settings to run: expected one of {_TOOLKIT_LIST}. If this file is a fragment "
            "to add to a job, merge it: azbai migrate JOB.json --merge FRAGMENT.json",
        )
        return
    if len(present) > 1:
        collector.error(
            join_path(base, present[1]),
            "many-toolkits",
            f"a job runs exactly one toolkit, found {', '.join(present)}",
        )
    toolkit = props.toolkit
    path = walker.path_of(toolkit)
    node_count = props.node_count or 1
    if isinstance(toolkit, CNTKsettings):
        _check_cntk(toolkit, path, collector)
    elif isinstance(toolkit, CaffeSettings):
        _check_one_of(toolkit.config_file_path, toolkit.python_script_file_path, path, collector)
        if toolkit.python_interpreter_path and not toolkit.python_script_file_path:
            collector.error(
                join_path(path, "pythonInterpreterPath"),
                "conflict",
                "'pythonInterpreterPath' can be given only with 'pythonScriptFilePath'",
            )
    elif isinstance(toolkit, TensorFlowSettings):
        ps = toolkit.parameter_server_count
        if ps is not None and ps > node_count:
            collector.error(
                join_path(path, "parameterServerCount"),
                "out-of-range",
                f"expected at most nodeCount ({node_count}) parameter servers, found {ps}",
            )
    elif getattr(toolkit, "command_line", "set") is None:
        collector.error(
            join_path(path, "commandLine"),
            "missing-key",
            "required key 'commandLine' is missing: nothing to run",
        )
    process_count = getattr(toolkit, "process_count", None)
    if process_count is not None and process_count < node_count:
        collector.warning(
            join_path(path, "processCount"),
            "idle-nodes",
            f"processCount {process_count} is less than nodeCount {node_count}: some nodes run nothing",
        )


def _check_cntk(toolkit: CNTKsettings, path: str, collector: Collector) -> None:
    script, config = toolkit.python_script_file_path, toolkit.config_file_path
    if toolkit.language_type == "Python" and config is not None:
        collector.error(
            join_path(path, "configFilePath"), "conflict", "'configFilePath' is for languageType BrainScript"
        )
    elif toolkit.language_type == "BrainScript" and script is not None:
        collector.error(
            join_path(path, "pythonScriptFilePath"),
            "conflict",
            "'pythonScriptFilePath' is for languageType Python",
        )
    else:
        _check_one_of(config, script, path, collector)
    if toolkit.python_interpreter_path and script is None:
        collector.error(
            join_path(path, "pythonInterpreterPath"),
            "conflict",
            "'pythonInterpreterPath' can be given only with 'pythonScriptFilePath'",
        )


def _check_one_of(config: str | None, script: str | None, path: str, collector: Collector) -> None:
    if config is None and script is None:
        collector.error(
            path, "missing-key", "expected 'pythonScriptFilePath' or 'configFilePath': nothing to run"
        )
    elif config is not None and script is not None:
        collector.error(
            join_path(path, "configFilePath"),
            "conflict",
            "give either 'pythonScriptFilePath' or 'configFilePath', not both",
        )


def _check_unique(collector: Collector, items: Iterable[tuple[str, str]], what: str) -> None:
    seen: dict[str, str] = {}
    for value, path in items:
        if value in seen:
            collector.error(path, "duplicate", f"{what} '{value}' is already used at {seen[value]}")
        else:
            seen[value] = path


def _check_secret(secret: SecretVariable, walker: Walker, collector: Collector) -> None:
    path = walker.path_of(secret)
    given = {path + ".value", path + ".valueSecretReference"} & walker.rejected
    if secret.value is None and secret.value_secret_reference is None and not given:
        collector.error(path, "missing-key", "expected 'value' or 'valueSecretReference'")
    elif secret.value is not None and secret.value_secret_reference is not None:
        collector.error(path, "conflict", "give either 'value' or 'valueSecretReference', not both")


def _check_credentials(credentials: StorageCredentials | None, walker: Walker, collector: Collector) -> None:
    if credentials is None:
        return
    path = walker.path_of(credentials)
    if credentials.account_key is not None and credentials.account_key_secret_reference is not None:
        collector.error(path, "conflict", "give either 'accountKey' or 'accountKeySecretReference', not both")
    # no key at all ("credentials": {} or "accountKey": ""): the CLI fetched one from Azure (placeholders.py says so)


def _check_file_share(share: AzureFileShareReference, walker: Walker, collector: Collector) -> None:
    path = walker.path_of(share)
    parsed = parse_file_share_url(share.azure_file_url)
    if parsed is None:
        shown = share.azure_file_url.split("?", 1)[0]
        collector.error(
            path + ".azureFileUrl",
            "bad-url",
            f"expected https://<account>.file.core.windows.net/<share>, found {describe_value(shown)}",
        )
    else:
        if parsed.had_query:
            collector.warning(
                path + ".azureFileUrl",
                "url-query",
                "the URL's query string (a SAS token?) is not used and is not copied anywhere",
            )
        problem = account_name_problem(parsed.account)
        if problem:
            collector.error(path + ".azureFileUrl", "bad-name", f"account '{parsed.account}': {problem}")
        problem = container_name_problem(parsed.share)
        if problem:
            collector.error(path + ".azureFileUrl", "bad-name", f"share '{parsed.share}': {problem}")
        if (
            share.account_name not in (None, "", parsed.account, ACCOUNT_PLACEHOLDER)
            and parsed.account != ACCOUNT_PLACEHOLDER
        ):
            collector.warning(
                path + ".accountName",
                "mismatch",
                f"accountName '{share.account_name}' differs from the URL's account '{parsed.account}'; "
                "the URL decides where the share is",
            )
    if share.account_name:  # an empty one: the CLI took the URL's (placeholders.py says so)
        problem = account_name_problem(share.account_name)
        if problem:
            collector.error(path + ".accountName", "bad-name", f"'{share.account_name}': {problem}")
    _check_credentials(share.credentials, walker, collector)


def _check_blob(blob: AzureBlobFileSystemReference, walker: Walker, collector: Collector) -> None:
    path = walker.path_of(blob)
    problem = account_name_problem(blob.account_name)
    if problem:
        collector.error(path + ".accountName", "bad-name", f"'{blob.account_name}': {problem}")
    problem = container_name_problem(blob.container_name)
    if problem:
        collector.error(path + ".containerName", "bad-name", f"'{blob.container_name}': {problem}")
    _check_credentials(blob.credentials, walker, collector)


def _check_container(settings: ContainerSettings, walker: Walker, collector: Collector) -> None:
    credentials = settings.image_source_registry.credentials
    if credentials is None:
        return
    path = walker.path_of(credentials)
    given = {path + ".password", path + ".passwordSecretReference"} & walker.rejected
    if credentials.password is None and credentials.password_secret_reference is None and not given:
        collector.error(path, "missing-key", "expected 'password' or 'passwordSecretReference'")
    elif credentials.password is not None and credentials.password_secret_reference is not None:
        collector.error(path, "conflict", "give either 'password' or 'passwordSecretReference', not both")


def shell_fields(props: JobProperties, walker: Walker) -> Iterator[tuple[str, str]]:
    """(JSON path, text) of every string Batch AI expanded on the node."""
    toolkit = props.toolkit
    if toolkit is not None:
        base = walker.path_of(toolkit)
        for name, json_key in _TEXT_FIELDS:
            value = getattr(toolkit, name, None)
            if isinstance(value, str):
                yield join_path(base, json_key), value
    if props.job_preparation is not None:
        yield walker.path_of(props.job_preparation) + ".commandLine", props.job_preparation.command_line
    for d in props.input_directories:
        yield walker.path_of(d) + ".path", d.path
    for o in props.output_directories:
        yield walker.path_of(o) + ".pathPrefix", o.path_prefix


_TEXT_FIELDS = (
    ("python_script_file_path", "pythonScriptFilePath"),
    ("python_interpreter_path", "pythonInterpreterPath"),
    ("config_file_path", "configFilePath"),
    ("command_line_args", "commandLineArgs"),
    ("master_command_line_args", "masterCommandLineArgs"),
    ("worker_command_line_args", "workerCommandLineArgs"),
    ("parameter_server_command_line_args", "parameterServerCommandLineArgs"),
    ("command_line", "commandLine"),
)


def _check_references(props: JobProperties, walker: Walker, base: str, collector: Collector) -> None:
    defined = set(BATCHAI_VARIABLES) | AZURE_BATCH_VARIABLES | SHELL_VARIABLES
    defined |= {input_variable(d.id) for d in props.input_directories}
    defined |= {output_variable(d.id) for d in props.output_directories}
    batchai_names = {n for n in defined if n.startswith("AZ_BATCHAI")}
    defined |= {v.name for v in props.environment_variables} | {v.name for v in props.secrets}
    texts = list(shell_fields(props, walker))
    if props.std_out_err_path_prefix is not None:
        texts.append((join_path(base, "stdOutErrPathPrefix"), props.std_out_err_path_prefix))
    # names assigned inside a command line itself (`export X=…; … $X`) are defined too
    for _, text in texts:
        defined |= _assigned_names(text)
    for path, text in texts:
        for ref in references(text):
            name = ref.name
            if name in defined:
                continue
            if name in UNRELIABLE_VARIABLES:
                collector.warning(path, "unreliable-variable", f"${name} {UNRELIABLE_VARIABLES[name]}")
            elif name.startswith(("AZ_BATCHAI_INPUT_", "AZ_BATCHAI_OUTPUT_")):
                kind = "input" if "_INPUT_" in name else "output"
                ident = name.split("_", 3)[3]
                collector.warning(
                    path,
                    "undeclared-directory",
                    f"${name} names no declared {kind} directory '{ident}', so it expands to an empty string"
                    + did_you_mean(name, defined),
                )
            elif name.startswith("AZ_BATCHAI") or did_you_mean(name, batchai_names):
                collector.error(
                    path,
                    "unknown-variable",
                    f"${name} is not a variable Batch AI defines{did_you_mean(name, defined)}",
                )
            else:
                collector.warning(
                    path,
                    "unknown-variable",
                    f"${name} is not defined by Batch AI nor by environmentVariables or secrets; "
                    "it expands to an empty string unless the image or jobPreparation defines it",
                )


def _assigned_names(text: str) -> set[str]:
    return set(_ASSIGNMENT_RE.findall(text))


_ASSIGNMENT_RE = re.compile(r"(?:^|[;&|\s])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=")


def _check_placeholders_elsewhere(
    props: JobProperties, walker: Walker, base: str, collector: Collector
) -> None:
    """The CLI replaced the storage placeholders only in mountVolumes; elsewhere they stayed literal."""
    texts = list(shell_fields(props, walker))
    for variable in props.environment_variables:
        if variable.value is not None:
            texts.append((walker.path_of(variable) + ".value", variable.value))
    for path, text in texts:
        for placeholder in (ACCOUNT_PLACEHOLDER, KEY_PLACEHOLDER):
            if placeholder in text:
                collector.warning(
                    path,
                    "literal-placeholder",
                    f"{placeholder} is not replaced here (the Batch AI CLI replaced it only in mountVolumes); "
                    "the job sees it literally",
                )
