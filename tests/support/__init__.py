"""Test support: a real Orthanc server as a child process and generated DICOM files."""
