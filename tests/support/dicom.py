"""Small, valid DICOM Part-10 files generated in memory with pydicom.

Each instance is a Secondary Capture image (8x8 pixels, 8-bit MONOCHROME2) with a proper
file meta group and the Explicit VR Little Endian transfer syntax: enough for Orthanc to
index it as a patient / study / series / instance, and small enough to upload by the dozen.

`orthanc_id` computes the identifiers Orthanc gives those resources: the SHA-1 of the DICOM
identifiers of the resource and its ancestors joined by "|", written as 5 dash-separated
groups of 8 hexadecimal digits.
"""

from __future__ import annotations

import datetime
import hashlib
import io
from collections.abc import Mapping, Sequence

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

ROWS = 8
COLUMNS = 8


def new_uid() -> str:
    """A fresh, globally unique DICOM UID (for study, series and SOP instance UIDs)."""
    return str(generate_uid())


def orthanc_id(*dicom_ids: str) -> str:
    """Orthanc's identifier of a resource, from the DICOM identifiers of it and its ancestors.

    patient: orthanc_id(PatientID)
    study: orthanc_id(PatientID, StudyInstanceUID)
    series: orthanc_id(PatientID, StudyInstanceUID, SeriesInstanceUID)
    instance: orthanc_id(PatientID, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID)
    """
    if not dicom_ids:
        raise ValueError("orthanc_id needs at least the PatientID")
    digest = hashlib.sha1("|".join(dicom_ids).encode("utf-8")).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def make_instance(
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    *,
    instance_number: int = 1,
    labels: Mapping[str, str] | None = None,
) -> bytes:
    """One Secondary Capture instance as the bytes of a DICOM Part-10 file.

    `labels` maps DICOM keywords to text values that are set on the dataset last, so they
    override the defaults (PatientName, StudyDescription, SeriesDescription, AccessionNumber,
    InstitutionName, ...). Unknown keywords raise ValueError.
    """
    now = datetime.datetime.now()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    # Patient
    ds.PatientName = f"Test^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "Portico test study"
    # General Series
    ds.Modality = "OT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Portico test series"
    # General Equipment / SC Equipment
    ds.Manufacturer = "Portico tests"
    ds.ConversionType = "WSD"
    # General Image
    ds.InstanceNumber = instance_number
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    # Image Pixel: 8x8, 8 bits, a gradient shifted by the instance number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((4 * i + instance_number) % 256 for i in range(ROWS * COLUMNS))

    for keyword, value in (labels or {}).items():
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"{keyword!r} is not a DICOM keyword")
        setattr(ds, keyword, value)

    with io.BytesIO() as buffer:
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


def make_study(
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uids: Sequence[str],
    labels: Mapping[str, str] | None = None,
) -> list[bytes]:
    """The instances `sop_uids` of one series of one study of one patient, as Part-10 bytes.

    Call it once per series (same patient_id and study_uid, another series_uid) to build a
    study with several series. `labels`: extra or overriding DICOM attributes by keyword,
    applied to every instance (see make_instance).
    """
    if not sop_uids:
        raise ValueError("make_study needs at least one SOP instance UID")
    return [
        make_instance(patient_id, study_uid, series_uid, sop_uid, instance_number=number, labels=labels)
        for number, sop_uid in enumerate(sop_uids, start=1)
    ]
