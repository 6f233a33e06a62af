//! The docker backend as far as this machine allows: with no image present and no registry,
//! the failure must say what is missing and how to get past it.

mod common;

use incident_lab::postgres::{docker, PgServer, PgSettings, PostgresChoice, ProvisionRequest};

/// A missing image is named, with the ways around it (build/load, --pg-image, local).
#[tokio::test]
async fn a_missing_image_gives_a_clear_error() {
    let image = "incident-lab/absent-postgres:never";
    match docker::probe("hello-world:none").await {
        Err(why) if !why.contains("not present") => {
            eprintln!("skipped: no Docker daemon here ({why})");
            return;
        }
        _ => {}
    }
    let request = ProvisionRequest {
        choice: PostgresChoice::Docker,
        pg_bin: None,
        pg_image: image.to_owned(),
        settings: PgSettings::default(),
    };

    let err = PgServer::provision(&request).await.unwrap_err().to_string();

    assert!(err.contains(image), "{err}");
    assert!(err.contains("not present locally"), "{err}");
    assert!(err.contains("--pg-image"), "{err}");
    assert!(err.contains("--postgres local"), "{err}");
}
