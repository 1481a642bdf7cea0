"""The VOD EventType -> payload field table of `EventContent` (PROTOCOL.md section 5)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# One entry per payload field of the SDK's `EventContent`, in the order the SDK declares them.
# The EventType names are written as the SDK documents them, odd ones included.
PAYLOAD_FIELD_BY_TYPE: Final[Mapping[str, str]] = MappingProxyType(
    {
        "NewFileUpload": "FileUploadEvent",
        "ProcedureStateChanged": "ProcedureStateChangeEvent",
        "FileDeleted": "FileDeleteEvent",
        "PullComplete": "PullCompleteEvent",
        "EditMediaComplete": "EditMediaCompleteEvent",
        "SplitMediaComplete": "SplitMediaCompleteEvent",
        "ComposeMediaComplete": "ComposeMediaCompleteEvent",
        # The five 2017 types (tasks started through the 2017 API).
        "ClipComplete": "ClipCompleteEvent",
        "TranscodeComplete": "TranscodeCompleteEvent",
        "CreateImageSpriteComplete": "CreateImageSpriteCompleteEvent",
        "ConcatComplete": "ConcatCompleteEvent",
        "CreateSnapshotByTimeOffsetComplete": "SnapshotByTimeOffsetCompleteEvent",
        "WechatPublishComplete": "WechatPublishCompleteEvent",
        "WechatMiniProgramPublishComplete": "WechatMiniProgramPublishCompleteEvent",
        "RemoveWatermark": "RemoveWatermarkCompleteEvent",
        "RestoreMediaComplete": "RestoreMediaCompleteEvent",
        "RebuildMediaComplete": "RebuildMediaCompleteEvent",
        "ExtractTraceWatermarkComplete": "ExtractTraceWatermarkCompleteEvent",
        "ExtractCopyRightWatermarkComplete": "ExtractCopyRightWatermarkCompleteEvent",
        "ReviewAudioVideoComplete": "ReviewAudioVideoCompleteEvent",
        # Undocumented: the SDK only says the field is obsolete; the name is our guess.
        "ReduceMediaBitrateComplete": "ReduceMediaBitrateCompleteEvent",
        "DescribeFileAttributesComplete": "DescribeFileAttributesCompleteEvent",
        "QualityInspectComplete": "QualityInspectCompleteEvent",
        "QualityEnhanceComplete": "QualityEnhanceCompleteEvent",
        "MediaCastStatusChanged": "MediaCastStatusChangedEvent",
        "PersistenceComplete": "PersistenceCompleteEvent",
        "ComplexAdaptiveDynamicStreamingComplete": "ComplexAdaptiveDynamicStreamingCompleteEvent",
        "ProcessMediaByMPSComplete": "ProcessMediaByMPSCompleteEvent",
        "AigcImageTaskComplete": "AigcImageCompleteEvent",
        "AigcVideoTaskComplete": "AigcVideoCompleteEvent",
        # The field has no "Event" suffix.
        "ExtractBlindWatermarkComplete": "ExtractBlindWatermarkComplete",
        "SceneAigcImageCompleteEvent": "SceneAigcImageCompleteEvent",
        "ProcessImageAsyncCompleteEvent": "ProcessImageAsyncCompleteEvent",
        "CreateAigcAdvancedCustomElementCompleteEvent": (
            "CreateAigcAdvancedCustomElementCompleteEvent"
        ),
        "CreateAigcCustomVoiceCompleteEvent": "CreateAigcCustomVoiceCompleteEvent",
        "DescribeAigcFaceInfoAsyncComplete": "DescribeAigcFaceInfoAsyncCompleteEvent",
        "AigcHunyuan3DTaskComplete": "AigcHunyuan3DCompleteEvent",
    }
)

# The 37 payload field names of `EventContent`.
PAYLOAD_FIELDS: Final[frozenset[str]] = frozenset(PAYLOAD_FIELD_BY_TYPE.values())
