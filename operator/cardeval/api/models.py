"""The ``CardEvaluation`` API: the single source of truth.

The CRD in ``crds/`` is generated from these models (``cardeval crd``), and a
test fails when the committed file and the models disagree.  Field names are
camelCase on the wire (Kubernetes convention) and snake_case in Python.

Constraints that involve one field are ordinary pydantic constraints, which
become OpenAPI bounds in the CRD.  Constraints across fields are written once
as CEL (``x-kubernetes-validations``) and evaluated by the API server; the
local runner checks the same conditions in Python (``validate_cross_fields``)
so that ``cardeval run`` refuses what the API server would refuse.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, field_validator, model_validator
from pydantic.config import JsonDict
from pydantic.alias_generators import to_camel

GROUP = "cardeval.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CardEvaluation"
PLURAL = "cardevaluations"

# --- reusable constrained strings ------------------------------------------------

#: An extended resource name: a domain prefix outside kubernetes.io and a name.
EXTENDED_RESOURCE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
#: A clause id (6.2.1.a) or a glob over ids (6.2.*, 6.1.a).
CLAUSE_ID_PATTERN = r"^6(\.[0-9]{1,2}|\.[a-n])+$"
CLAUSE_GLOB_PATTERN = r"^6(\.([0-9]{1,2}|[a-n]|\*))*(\.\*)?$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

ClauseId = Annotated[str, StringConstraints(pattern=CLAUSE_ID_PATTERN, max_length=16)]
ClauseGlob = Annotated[str, StringConstraints(pattern=CLAUSE_GLOB_PATTERN, max_length=16)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN, max_length=317)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN, max_length=63)]
LongText = Annotated[str, StringConstraints(max_length=1024)]


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One CEL validation rule, as the CRD's x-kubernetes-validations wants it.

    ``field_path`` is relative to the object the rule sits on (``.thresholds`` on the spec); the
    API server reports the error at ``spec.thresholds``.
    """
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class ApiModel(BaseModel):
    """Strict, camelCase on the wire: unknown fields are an error, not ignored."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True,
        use_enum_values=True, validate_default=True,
    )

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --- enums -----------------------------------------------------------------------


class CardType(str, Enum):
    TRAINING = "training"
    INFERENCE = "inference"


class Profile(str, Enum):
    """Depth of the evaluation: sizes, repeats and durations."""

    QUICK = "quick"
    STANDARD = "standard"
    FULL = "full"


class Launcher(str, Enum):
    MPIJOB = "mpijob"
    INDEXED_JOB = "indexed-job"


class ComplianceReason(str, Enum):
    """The reason of a node's (and the evaluation's) ``Compliant`` condition."""

    COMPLIANT = "AllShallClausesMet"
    RELAXED = "AllShallClausesMetWithRelaxedThresholds"
    NOT_COMPLIANT = "ShallClausesNotMet"
    CPU_STAND_IN = "JudgedOnCpuStandIn"
    NOTHING_JUDGED = "NoShallClauseJudged"


class Verdict(str, Enum):
    PASS = "Pass"
    FAIL = "Fail"
    WARN = "Warn"
    NOT_RUN = "NotRun"
    ATTESTED = "Attested"
    PARTIAL = "Partial"
    ERROR = "Error"
    NOT_APPLICABLE = "NotApplicable"


class Phase(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"


# --- spec ------------------------------------------------------------------------


class ClauseSelection(ApiModel):
    """Which clauses to evaluate, as globs over clause ids (``6.2.*``)."""

    include: list[ClauseGlob] = Field(default_factory=lambda: ["6.*"], max_length=128)
    exclude: list[ClauseGlob] = Field(default_factory=list, max_length=128)


class MultiNode(ApiModel):
    model_config = ConfigDict(json_schema_extra={"description": "Inter-node clauses (6.2.1.g, cluster linearity)."})

    nodes: int = Field(default=2, ge=2, le=1024, description="nodes in one multi-node run")
    launcher: Launcher = Launcher.MPIJOB


class Evidence(ApiModel):
    """An attestation for a clause no software can check (secure boot, MTBF...)."""

    clause: ClauseId
    attested_by: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    reference: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description="where the evidence is: a report id, a URL, a certificate number")
    date: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$", max_length=10)] | None = None
    note: LongText | None = None
    overrides_measurement: bool = Field(
        default=False,
        description="let this attestation decide although the clause's own measurement did not pass; by "
                    "default a measurement that ran wins over an attestation, and both are shown")


class Taint(ApiModel):
    key: LabelKey
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="only taints with this effect; all effects when unset")


class OnPass(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("(has(self.removeTaints) && size(self.removeTaints) > 0) || "
            "(has(self.addLabels) && size(self.addLabels) > 0)",
            "onPass must remove a taint or add a label"),
    ]})

    remove_taints: list[Taint] = Field(default_factory=list, max_length=16)
    add_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=16)

    @model_validator(mode="after")
    def _does_something(self) -> OnPass:
        if not self.remove_taints and not self.add_labels:
            raise ValueError("onPass must remove a taint or add a label")
        return self


class VolumeSource(ApiModel):
    """A volume the operator mounts into a workload's pod: a claim or a node's directory, exactly one."""

    #: The spec field, for the validation message.
    FIELD: ClassVar[str] = "volume"

    claim_name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] | None = Field(
        default=None, description="a PersistentVolumeClaim in the operator's namespace")
    host_path: Annotated[str, StringConstraints(pattern=r"^/[^\x00]*$", max_length=4096)] | None = Field(
        default=None, description="a directory on every evaluated node (locally: on this machine)")

    @model_validator(mode="after")
    def _one_source(self) -> VolumeSource:
        if (self.claim_name is None) == (self.host_path is None):
            raise ValueError(f"{self.FIELD} takes exactly one of claimName and hostPath")
        return self


class CheckpointVolume(VolumeSource):
    model_config = ConfigDict(json_schema_extra={
        "description": "A volume that outlives a pod, for the resume test's checkpoints (6.2.4.a), writable by "
                       "the workload's user (ReadWriteOnce is enough: the test runs on one node at a time). With "
                       "it the test also deletes the training pod and checks that its replacement resumes; "
                       "without it only the container restart is tested (its checkpoints in an emptyDir).",
        "x-kubernetes-validations": [cel("has(self.claimName) != has(self.hostPath)",
                                         "checkpointVolume takes exactly one of claimName and hostPath")]})

    FIELD: ClassVar[str] = "checkpointVolume"


class DatasetVolume(VolumeSource):
    model_config = ConfigDict(json_schema_extra={
        "description": "The volume holding the training case's dataset in its published format (CIFAR-10: "
                       "data_batch_1-5, test_batch, batches.meta at its top), mounted read-only",
        "x-kubernetes-validations": [cel("has(self.claimName) != has(self.hostPath)",
                                         "trainingCase.volume takes exactly one of claimName and hostPath")]})

    FIELD: ClassVar[str] = "trainingCase.volume"


class TrainingCase(ApiModel):
    model_config = ConfigDict(json_schema_extra={
        "description": "What the train workload (6.2.3.a, 6.2.1.c, 6.2.5) trains: the built-in digits case, or "
                       "Annex A's CIFAR-10 reference case read from a volume, whose target is the standard's "
                       "(A.3: 0.9362) unless spec.thresholds sets min_accuracy",
        "x-kubernetes-validations": [cel("self.dataset == 'digits' ? !has(self.volume) : has(self.volume)",
                                         "trainingCase: cifar10 needs a volume holding it; digits is built in "
                                         "and takes none")]})

    dataset: Literal["digits", "cifar10"] = Field(
        default="digits", description="digits: scikit-learn's, built in; cifar10: from the volume")
    volume: DatasetVolume | None = None

    @model_validator(mode="after")
    def _volume_as_needed(self) -> TrainingCase:
        if (self.dataset == "digits") != (self.volume is None):
            raise ValueError("trainingCase: cifar10 needs a volume holding it; digits is built in and takes none")
        return self


class ModelVolume(VolumeSource):
    model_config = ConfigDict(json_schema_extra={
        "description": "The volume holding the foreign model, its model card and, for a cifar10 card, the "
                       "dataset, mounted read-only",
        "x-kubernetes-validations": [cel("has(self.claimName) != has(self.hostPath)",
                                         "foreignModel.volume takes exactly one of claimName and hostPath")]})

    FIELD: ClassVar[str] = "foreignModel.volume"


#: A path inside a volume: relative (a ".." part is refused by ``ForeignModel``'s validator).
RELATIVE_PATH_PATTERN = r"^[^/\x00][^\x00]*$"


class ForeignModel(ApiModel):
    model_config = ConfigDict(json_schema_extra={
        "description": "6.3.3.g with the user's own model trained on another vendor's card: an ONNX file and its "
                       "model card (JSON: model, sha256, trained_on, dataset, split, accuracy, command) on a "
                       "volume, in place of the model the repository ships"})

    volume: ModelVolume
    model: Annotated[str, StringConstraints(pattern=RELATIVE_PATH_PATTERN, max_length=1024)] = Field(
        description="the ONNX file, relative to the volume")
    card: Annotated[str, StringConstraints(pattern=RELATIVE_PATH_PATTERN, max_length=1024)] | None = Field(
        default=None, description="its model card, relative to the volume (default: the model's path with .json)")
    dataset_dir: Annotated[str, StringConstraints(pattern=RELATIVE_PATH_PATTERN, max_length=1024)] | None = Field(
        default=None, description="for a card whose dataset is cifar10: its directory, relative to the volume")

    @field_validator("model", "card", "dataset_dir")
    @classmethod
    def _inside(cls, path: str | None) -> str | None:
        if path is not None and ".." in path.split("/"):
            raise ValueError("must stay inside the volume (no '..')")
        return path


#: What a configured engine's command must name (cardeval_workloads.suite._vendor_engine fills them in).
ENGINE_PLACEHOLDERS = ("{model}", "{input}", "{output}")


class InferenceEngine(ApiModel):
    model_config = ConfigDict(json_schema_extra={
        "description": "A vendor's inference engine for 6.3.3.b in place of ONNX Runtime: a command in the "
                       "workload image that converts the ONNX model at {model} and runs it on the card over the "
                       "test images at {input} (.npy, float32 N×1×8×8), writing the logits to {output} (.npy, "
                       "float32 N×10) and, where the argv names {report}, a JSON file saying "
                       "{\"engine\": ..., \"device\": ...}. Judged as ONNX Runtime is; on a card, a run that "
                       "does not report a card is an Error.",
        "x-kubernetes-validations": [cel(
            "self.command.exists(a, a.contains('{model}')) && self.command.exists(a, a.contains('{input}')) && "
            "self.command.exists(a, a.contains('{output}'))",
            "inferenceEngine.command must name {model}, {input} and {output}", ".command")]})

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*$", max_length=64)] = Field(
        description="how the results name the engine")
    command: list[Annotated[str, StringConstraints(min_length=1, max_length=1024)]] = Field(
        min_length=1, max_length=64, description="the argv (no shell), with the placeholders")

    @model_validator(mode="after")
    def _placeholders(self) -> InferenceEngine:
        missing = [p for p in ENGINE_PLACEHOLDERS if not any(p in a for a in self.command)]
        if missing:
            raise ValueError(f"inferenceEngine.command must name {{model}}, {{input}} and {{output}}; it names no "
                             f"{', '.join(missing)}")
        return self


CryptoAlgorithm = Literal["SM2", "SM3", "SM4"]
CRYPTO_ALGORITHMS: tuple[CryptoAlgorithm, ...] = ("SM2", "SM3", "SM4")


class Crypto(ApiModel):
    model_config = ConfigDict(json_schema_extra={
        "description": "The card's cryptography as its vendor declares it (6.4.b-c, 8.5.2-8.5.3): a tool in the "
                       "workload image that runs one SM2/SM3/SM4 operation per call on files, compared with the "
                       "standards' examples and the host's implementations. Without it the clauses are NotRun "
                       "(or Attested with evidence)",
        "x-kubernetes-validations": [
            cel("self.command.exists(a, a.contains('{op}')) && self.command.exists(a, a.contains('{input}')) && "
                "self.command.exists(a, a.contains('{output}'))",
                "crypto.command must name {op}, {input} and {output}", ".command"),
            cel("!has(self.linkCommand) || (self.linkCommand.exists(a, a.contains('{input}')) && "
                "self.linkCommand.exists(a, a.contains('{output}')))",
                "crypto.linkCommand must name {input} and {output}", ".linkCommand"),
            cel("!has(self.algorithms) || 'SM4' in self.algorithms",
                "crypto.algorithms must include SM4 (8.5.2 encrypts and decrypts)", ".algorithms"),
        ]})

    command: list[Annotated[str, StringConstraints(min_length=1, max_length=1024)]] = Field(
        min_length=1, max_length=64,
        description="the tool's argv with {op}, {input}, {output} and as needed {key}, {iv}, {signature}, {device} "
                    "and {report} (where it writes {\"device\": ...}: on a card, a run that does not name the card "
                    "is not its evidence)")
    link_command: list[Annotated[str, StringConstraints(min_length=1, max_length=1024)]] | None = Field(
        default=None, min_length=1, max_length=64,
        description="the vendor's check that host-card traffic is encrypted (8.5.3 d): an argv with {input} and "
                    "{output}, writing {\"encrypted\": true|false, \"how\": ...} to {output}")
    algorithms: list[CryptoAlgorithm] = Field(
        default_factory=lambda: list(CRYPTO_ALGORITHMS), min_length=1, max_length=3,
        description="the algorithms the card implements (SM4 at least: 8.5.2 encrypts and decrypts)")

    @model_validator(mode="after")
    def _placeholders(self) -> Crypto:
        missing = [p for p in ("{op}", "{input}", "{output}") if not any(p in a for a in self.command)]
        if missing:
            raise ValueError(f"crypto.command must name {{op}}, {{input}} and {{output}}; it names no "
                             f"{', '.join(missing)}")
        if self.link_command is not None and not all(any(p in a for a in self.link_command)
                                                      for p in ("{input}", "{output}")):
            raise ValueError("crypto.linkCommand must name {input} and {output}")
        if "SM4" not in self.algorithms:
            raise ValueError("crypto.algorithms must include SM4 (8.5.2 encrypts and decrypts)")
        return self


class Restart(ApiModel):
    model_config = ConfigDict(json_schema_extra={
        "description": "Step g of the stress methods (8.3.4.2 g, 8.4.4.2 g), opt-in: after the node's other work "
                       "the operator cordons and drains it, has it restarted through its BMC "
                       "(ComputerSystem.Reset, from a Job on another node), waits for its new boot (the Node's "
                       "bootID changes and it is Ready), re-checks its cards, and restores its schedulability"})

    reset_type: Literal["GracefulRestart", "ForceRestart", "PowerCycle"] = Field(
        default="GracefulRestart", description="the ResetType requested (the BMC must allow it)")
    timeout_seconds: int = Field(default=1800, ge=60, le=86400,
                                 description="how long the node may take to come back Ready with a new bootID")


class Bmc(ApiModel):
    model_config = ConfigDict(json_schema_extra={
        "description": "The nodes' BMCs (Redfish), for 6.1.b-e: each node's endpoint in its annotation, the "
                       "credentials in a Secret of the operator's namespace (keys username and password), given "
                       "to the bmc workload's pod as environment from the Secret: the operator itself never "
                       "reads it"})

    credentials_secret: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] = Field(
        description="the Secret with the keys username and password")
    endpoint_annotation: Annotated[str, StringConstraints(pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9][-A-Za-z0-9_.]*$",
                                                          max_length=316)] = Field(
        default="cardeval.io/bmc-endpoint", description="the Node annotation holding its BMC's https:// URL")
    ca_config_map: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] | None = Field(
        default=None, description="a ConfigMap whose key ca.crt holds the CA that signed the BMCs' certificates")
    insecure_skip_verify: bool = Field(
        default=False, description="do not verify the BMCs' TLS certificates (recorded in every result)")
    os_command: list[Annotated[str, StringConstraints(min_length=1, max_length=1024)]] | None = Field(
        default=None, min_length=1, max_length=64,
        description="a vendor command in the workload image printing card {index}'s serial, firmware, uuid, "
                    "power_w and temperature_c as JSON (default: NVML)")
    restart: Restart | None = Field(
        default=None, description="restart each node through its BMC and find its cards again (opt-in)")


class Admission(ApiModel):
    model_config = ConfigDict(json_schema_extra={
        "description": "What the operator writes on each node once it is judged: the Node condition "
                       "cardeval.io/Validated (True only for a node admitted; False with the clauses that failed; "
                       "Unknown while its work runs), the labels cardeval.io/validation (passed or failed) and "
                       "cardeval.io/validation-expires (when the result goes stale), and onPass for the nodes "
                       "admitted. A node not admitted keeps its taints and loses onPass's labels"})

    on_pass: OnPass | None = None
    accept_relaxed_thresholds: bool = Field(
        default=False,
        description="also admit a node whose compliance rests on a shall threshold relaxed below the "
                    "standard's (spec.thresholds); off by default, so that relaxing is a deliberate claim")
    dry_run: bool = Field(
        default=False,
        description="change no node: each node's Event NodeAdmissionDryRun and status.nodes[].admission say what "
                    "would have been changed")
    valid_for_seconds: int = Field(
        default=30 * 24 * 3600, ge=3600, le=366 * 24 * 3600,
        description="how long a node's result stands: the label cardeval.io/validation-expires says until when")


class NodeHold(ApiModel):
    model_config = ConfigDict(json_schema_extra={
        "description": "Before a node's first work item, the operator taints it cardeval.io/testing=<evaluation "
                       "uid>:NoSchedule (the workload pods tolerate it) and waits until no other pod holds its "
                       "cards; the node is given back as it was (the taint removed) once it is judged, when the "
                       "evaluation is deleted, or at the operator's start for an evaluation deleted meanwhile. A "
                       "node still busy after idleTimeoutSeconds is judged NotRun (busy), never on a shared card"})

    taint: bool = Field(
        default=True, description="taint the node while it is tested (off: the idle check alone)")
    idle_timeout_seconds: int = Field(
        default=900, ge=0, le=7 * 24 * 3600,
        description="how long a node whose cards another pod holds is waited for before its work is NotRun")


class Revalidation(ApiModel):
    model_config = ConfigDict(json_schema_extra={
        "description": "Keep the fleet validated, not one apply: the evaluation stays open (as a DaemonSet keeps "
                       "a pod on every matching node) and evaluates the nodes that match spec.nodeSelector later, "
                       "and again each node that rebooted or whose result is older than everySeconds; a node's "
                       "earlier rounds are kept (historyLimit) in its results ConfigMap. Not with multiNode: a "
                       "run across nodes is not repeated for one node"})

    new_nodes: bool = Field(default=True, description="evaluate the nodes that match after the start")
    after_reboot: bool = Field(
        default=True, description="evaluate a node again when its bootID differs from the one it was judged on")
    every_seconds: int | None = Field(
        default=None, ge=600, le=366 * 24 * 3600,
        description="evaluate each node again this long after it was judged (unset: only new and rebooted nodes)")
    history_limit: int = Field(default=10, ge=0, le=100, description="earlier rounds kept per node")


class Toleration(ApiModel):
    """A toleration the workload pods carry (besides those of onPass's taints and the testing taint)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "tolerations: operator Exists takes no value"),
        cel("has(self.key) || self.operator == 'Exists'",
            "tolerations: a toleration without a key must use operator Exists"),
    ]})

    key: LabelKey | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("tolerations: operator Exists takes no value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("tolerations: a toleration without a key must use operator Exists")
        return self


class ExpectedCard(ApiModel):
    """What the node should hold, for the configuration check of 6.1.a (8.2.1 c): the fields read from
    every card must agree with each other and with these."""

    vendor: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="contained in each card's vendor, case-insensitive (e.g. NVIDIA)")
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None, description="contained in each card's model name, case-insensitive (e.g. H100)")
    firmware: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="each card's firmware version, exactly")
    memory_gib: float | None = Field(default=None, ge=0.001, le=65536, alias="memoryGiB",
                                     description="each card's memory in GiB, within 3 % (drivers reserve some)")


_SPEC_RULES: list[JsonValue] = [
    cel("!has(self.thresholds) || (self.cardType == 'training' ? self.thresholds.all(k, !k.startsWith('6.3.')) "
        ": self.thresholds.all(k, !k.startsWith('6.2.')))",
        "thresholds name a clause of the other card type", ".thresholds"),
    cel("!has(self.evidence) || (self.cardType == 'training' ? self.evidence.all(e, !e.clause.startsWith('6.3.')) "
        ": self.evidence.all(e, !e.clause.startsWith('6.2.')))",
        "evidence names a clause of the other card type", ".evidence"),
    cel("!has(self.evidence) || self.evidence.all(e, self.evidence.exists_one(f, f.clause == e.clause))",
        "evidence names the same clause twice", ".evidence"),
    cel("!has(self.multiNode) || self.expectedCardsPerNode * self.multiNode.nodes <= 8192",
        "multiNode.nodes × expectedCardsPerNode must not exceed 8192 cards", ".multiNode"),
    cel("!has(self.revalidation) || !has(self.multiNode)",
        "revalidation cannot repeat a run across nodes: leave out multiNode", ".revalidation"),
    cel("!has(self.trainingCase) || self.cardType == 'training'",
        "trainingCase is for a training card", ".trainingCase"),
    cel("!has(self.inferenceEngine) || self.cardType == 'inference'",
        "inferenceEngine is for an inference card", ".inferenceEngine"),
    cel("!has(self.foreignModel) || self.cardType == 'inference'",
        "foreignModel is for an inference card", ".foreignModel"),
    cel("!self.resourceName.startsWith('kubernetes.io/') && !self.resourceName.startsWith('requests.')",
        "resourceName must be an extended resource outside kubernetes.io", ".resourceName"),
    cel("!has(self.clauses) || !has(self.clauses.include) || !has(self.clauses.exclude) || "
        "self.clauses.include.all(p, !(p in self.clauses.exclude))",
        "a clause pattern is both included and excluded", ".clauses"),
]


class EvaluationSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    card_type: CardType = Field(description="training selects clause 6.2, inference 6.3")
    resource_name: Annotated[str, StringConstraints(pattern=EXTENDED_RESOURCE_PATTERN, max_length=253)] = Field(
        description="the device plugin's extended resource, e.g. nvidia.com/gpu")
    node_selector: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=32)
    expected_cards_per_node: int = Field(ge=1, le=64)
    profile: Profile = Profile.QUICK
    clauses: ClauseSelection = Field(default_factory=ClauseSelection)
    image: Annotated[str, StringConstraints(min_length=1, max_length=512,
                                            pattern=r"^[^\s]+$")] = "ghcr.io/cardeval/workloads:0.1.0"
    multi_node: MultiNode | None = None
    thresholds: dict[ClauseId, Annotated[
        dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)], float],
        Field(max_length=16)]] = Field(default_factory=dict, max_length=64,
                                       description="per-clause overrides of the standard's numbers")
    evidence: list[Evidence] = Field(default_factory=list, max_length=64)
    admission: Admission | None = None
    cpu_stand_in: bool = Field(
        default=False,
        description="run the card workloads on the host CPU instead of the cards (a cluster without cards, "
                    "the test control plane): every result is labelled, no node judged on it is compliant "
                    "or admitted. Off: a workload that sees fewer accelerators than its pod was given is an "
                    "Error")
    expected_card: ExpectedCard | None = None
    item_timeout_seconds: int | None = Field(
        default=None, ge=30, le=4 * 24 * 3600,
        description="time limit of one work item; by default it follows the profile")
    max_nodes_in_parallel: int = Field(default=50, ge=1, le=10000)
    checkpoint_volume: CheckpointVolume | None = None
    training_case: TrainingCase | None = None
    inference_engine: InferenceEngine | None = None
    foreign_model: ForeignModel | None = None
    bmc: Bmc | None = None
    crypto: Crypto | None = None
    node_hold: NodeHold = Field(default_factory=NodeHold)
    revalidation: Revalidation | None = Field(
        default=None, description="new, rebooted and stale nodes evaluated again (unset: the nodes matching at "
                                  "the start, once)")
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32,
        description="more tolerations for the workload pods: the nodes' other taints (a startup taint of the "
                    "node's provisioner, a maintenance taint)")

    @property
    def training_dataset(self) -> str:
        """The dataset the train workload trains on (digits unless ``trainingCase`` says otherwise)."""
        return self.training_case.dataset if self.training_case is not None else "digits"

    @model_validator(mode="after")
    def _cross_fields(self) -> EvaluationSpec:
        validate_cross_fields(self)
        return self


def validate_cross_fields(spec: EvaluationSpec) -> None:
    """The Python twin of ``_SPEC_RULES`` (the API server evaluates the CEL)."""
    other = "6.3." if spec.card_type == CardType.TRAINING.value else "6.2."
    for key in spec.thresholds:
        if key.startswith(other):
            raise ValueError(f"thresholds: {key} is a clause of the other card type")
    seen: set[str] = set()
    for ev in spec.evidence:
        if ev.clause.startswith(other):
            raise ValueError(f"evidence: {ev.clause} is a clause of the other card type")
        if ev.clause in seen:
            raise ValueError(f"evidence: {ev.clause} is named twice")
        seen.add(ev.clause)
    if spec.multi_node and spec.expected_cards_per_node * spec.multi_node.nodes > 8192:
        raise ValueError("multiNode: multiNode.nodes × expectedCardsPerNode must not exceed 8192 cards")
    if spec.revalidation is not None and spec.multi_node is not None:
        raise ValueError("revalidation: cannot repeat a run across nodes: leave out multiNode")
    if spec.training_case is not None and spec.card_type != CardType.TRAINING.value:
        raise ValueError("trainingCase: is for a training card")
    if spec.inference_engine is not None and spec.card_type != CardType.INFERENCE.value:
        raise ValueError("inferenceEngine: is for an inference card")
    if spec.foreign_model is not None and spec.card_type != CardType.INFERENCE.value:
        raise ValueError("foreignModel: is for an inference card")
    if spec.resource_name.startswith(("kubernetes.io/", "requests.")):
        raise ValueError("resourceName: must be an extended resource outside kubernetes.io")
    both = set(spec.clauses.include) & set(spec.clauses.exclude)
    if both:
        raise ValueError(f"clauses: {sorted(both)[0]} is both included and excluded")


class ObjectMeta(ApiModel):
    """The part of metadata a local file may carry; the API server owns the rest."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)

    name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


# --- status ----------------------------------------------------------------------


class Condition(ApiModel):
    """A condition as the Kubernetes API conventions define it."""

    type: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=316)]
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                                             max_length=1024)]
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    last_transition_time: datetime
    observed_generation: int | None = Field(default=None, ge=0)


class VerdictCounts(ApiModel):
    clauses: int = 0
    passed: int = 0
    failed: int = 0
    warned: int = 0
    not_run: int = 0
    attested: int = 0
    partial: int = 0
    errored: int = 0
    not_applicable: int = 0

    def add(self, verdict: str) -> None:
        field = {
            Verdict.PASS.value: "passed", Verdict.FAIL.value: "failed", Verdict.WARN.value: "warned",
            Verdict.NOT_RUN.value: "not_run", Verdict.ATTESTED.value: "attested",
            Verdict.PARTIAL.value: "partial", Verdict.ERROR.value: "errored",
            Verdict.NOT_APPLICABLE.value: "not_applicable",
        }[verdict]
        setattr(self, field, getattr(self, field) + 1)
        self.clauses += 1

    def merge(self, other: VerdictCounts) -> None:
        for name in type(self).model_fields:
            setattr(self, name, getattr(self, name) + getattr(other, name))


#: The key of a results ConfigMap that holds the node's ``NodeResult`` as JSON.
RESULTS_KEY = "node-result.json"


class ResultsRef(ApiModel):
    """Where the per-clause detail of one node lives (it does not fit the status): a ConfigMap whose
    ``RESULTS_KEY`` holds the node's ``NodeResult``, or locally a file."""

    kind: Literal["ConfigMap", "File"]
    name: Annotated[str, StringConstraints(max_length=4096)]
    namespace: Annotated[str, StringConstraints(max_length=63)] | None = None


class ThresholdOverride(ApiModel):
    """One ``spec.thresholds`` value beside the catalog's (the standard's number where it gives one)."""

    clause: ClauseId
    key: Annotated[str, StringConstraints(max_length=64)]
    value: float
    standard: float
    change: Literal["relaxed", "tightened", "same"]


class NodeSummary(ApiModel):
    name: Annotated[str, StringConstraints(max_length=253)]
    phase: Phase
    compliant: bool | None = None
    counts: VerdictCounts = Field(default_factory=VerdictCounts)
    #: Clauses whose verdict keeps the node from compliance (bounded: the detail has all).
    blocking: list[ClauseId] = Field(default_factory=list, max_length=64)
    results_ref: ResultsRef | None = None
    message: Annotated[str, StringConstraints(max_length=1024)] = ""
    #: Why the node is (not) compliant, as a condition reason (``ComplianceReason``).
    compliance: Annotated[str, StringConstraints(max_length=64)] = ""
    #: Shall clauses that passed only on a threshold relaxed below the standard's.
    relaxed: list[ClauseId] = Field(default_factory=list, max_length=64)
    cpu_stand_in: bool = False
    #: What ``spec.admission`` did to the node (or, in a dry run, would have done).
    admission: Annotated[str, StringConstraints(max_length=512)] = ""
    #: How many times the node was evaluated again (``spec.revalidation``); its earlier rounds are in its detail.
    round: int = Field(default=0, ge=0)


class EvaluationStatus(ApiModel):
    observed_generation: int | None = Field(default=None, ge=0)
    phase: Phase = Phase.PENDING
    compliant: bool | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    summary: VerdictCounts = Field(default_factory=VerdictCounts)
    nodes_total: int = 0
    nodes_done: int = 0
    nodes_compliant: int = 0
    excluded_clauses: list[ClauseId] = Field(default_factory=list, max_length=128)
    #: Every ``spec.thresholds`` value with the standard's beside it (relaxed ones make their own claim).
    threshold_overrides: list[ThresholdOverride] = Field(default_factory=list, max_length=256)
    #: True when the card workloads ran on the host CPU (``spec.cpuStandIn``, or no card locally).
    cpu_stand_in: bool = False
    nodes: list[NodeSummary] = Field(default_factory=list, max_length=5000)
    message: Annotated[str, StringConstraints(max_length=1024)] = ""


class CardEvaluation(ApiModel):
    api_version: Literal["cardeval.io/v1alpha1"]
    kind: Literal["CardEvaluation"]
    metadata: ObjectMeta
    spec: EvaluationSpec
    status: EvaluationStatus | None = None


# --- per-node detail ---------------------------------------------------------------


class Measurement(ApiModel):
    value: float | None = None
    unit: str = ""
    device: int | None = None
    note: str = ""


class ThresholdUse(ApiModel):
    """A threshold a clause was judged against, beside the catalog's value."""

    value: float
    standard: float
    #: Where ``value`` came from: the catalog (the standard's number, or this product's where the
    #: standard gives none — the clause's note says which) or ``spec.thresholds``.
    source: Literal["catalog", "spec"] = "catalog"
    change: Literal["relaxed", "tightened", "same"] = "same"


class ClauseResult(ApiModel):
    clause: ClauseId
    title: str
    level: Literal["shall", "should", "may", "metric"]
    verdict: Verdict
    reason: str = ""
    method: str = ""
    workload: str | None = None
    measurements: dict[str, Measurement] = Field(default_factory=dict)
    evidence: Evidence | None = None
    #: The thresholds the verdict was judged against (key → value beside the catalog's).
    thresholds: dict[str, ThresholdUse] = Field(default_factory=dict)
    #: The evidence came from the host CPU standing in for the cards: never a card's verdict.
    cpu_stand_in: bool = False
    #: A measured metric's value relative to the A100 baseline of seed 003.
    scores: dict[str, float] = Field(default_factory=dict)


#: The most points one series holds (the engine thins a power trace further, to 200 a card).
SERIES_POINTS = 512


#: What a series shows, and so which plot draws it.
SeriesKind = Literal["collective", "transfer", "power", "power-level", "latency"]


class Series(ApiModel):
    """One measured curve of a workload run: bandwidth over message or transfer size, power over time or per
    load level, latency over percentile.

    A verdict is judged on one figure; the curve it came from is what a reader looks at to see why (where
    the bandwidth saturates, whether the power settles).  It is kept on the node's result, bounded, so that
    a cluster's results (``cardeval results``) and a local run carry the same curves.
    """

    kind: SeriesKind
    #: What the curve is, for a legend: ``collectives all_reduce busbw``.
    name: Annotated[str, StringConstraints(max_length=128)]
    workload: Annotated[str, StringConstraints(max_length=64)]
    device: int | None = None
    x_unit: Annotated[str, StringConstraints(max_length=32)] = ""
    y_unit: Annotated[str, StringConstraints(max_length=32)] = ""
    #: Category names of the x axis (load levels: idle, 25, ..., full), where x is not a number.
    x_labels: list[Annotated[str, StringConstraints(max_length=32)]] = Field(default_factory=list, max_length=64)
    x: list[float] = Field(default_factory=list, max_length=SERIES_POINTS)
    y: list[float] = Field(default_factory=list, max_length=SERIES_POINTS)

    @model_validator(mode="after")
    def _paired(self) -> Series:
        if len(self.x) != len(self.y):
            raise ValueError(f"series {self.name!r}: {len(self.x)} x values but {len(self.y)} y values")
        if self.x_labels and len(self.x_labels) != len(self.x):
            raise ValueError(f"series {self.name!r}: {len(self.x_labels)} x labels for {len(self.x)} points")
        return self


class NodeResult(ApiModel):
    """Everything known about one node: one ConfigMap in a cluster, one file locally."""

    evaluation: str
    generation: int | None = None
    node: str
    card_type: CardType
    profile: Profile
    backend: str = ""
    devices: list[dict[str, Any]] = Field(default_factory=list)
    results: list[ClauseResult] = Field(default_factory=list)
    counts: VerdictCounts = Field(default_factory=VerdictCounts)
    compliant: bool | None = None
    #: The condition reason of that answer (``ComplianceReason``), and in words.
    compliance: str = ""
    compliance_message: str = ""
    #: Shall clauses that passed only on a threshold relaxed below the standard's.
    relaxed: list[str] = Field(default_factory=list)
    #: True when any card clause was judged on the host CPU standing in for the cards.
    cpu_stand_in: bool = False
    #: The resource the pods were given, how many each got, and what each card workload saw.
    resource_name: str = ""
    cards_given: int | None = None
    excluded_clauses: list[str] = Field(default_factory=list)
    #: When the node was judged: where ``spec.admission.validForSeconds`` and ``revalidation`` count from.
    judged_at: datetime | None = None
    #: The node's ``status.nodeInfo.bootID`` when it was judged (``revalidation.afterReboot``), and its round.
    boot_id: str = ""
    round: int = 0
    #: The curves behind the figures (``Series``), for the HTML report's plots.
    series: list[Series] = Field(default_factory=list, max_length=256)


def error_location(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location (already in wire names) as a path: ``spec.clauses.include[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if text.startswith(("function-", "constrained-")) or "[" in text:
            continue
        out += ("." if out else "") + text
    return out or "(document)"
