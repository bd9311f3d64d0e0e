"""The Helm chart: offline render, lint and schema checks; install and an RBAC-enforced run."""
