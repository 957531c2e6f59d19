//! Local Janus hosts: a private Janus process per host, from the templates in `infra/janus/`.
