//! An embedded app's view of a deployment (`flowrun_client::Deployed`): it fetches what an
//! environment runs and caches it, picks up a new deployment in the background, and keeps
//! serving the last good bundle, also after a restart, while the server is down.

mod support;

use std::sync::Arc;
use std::time::Duration;

use flowrun_client::{BundleFile, Deployed};
use flowrun_core::{Project, SourceFile};
use flowrun_fakellm::{FakeConfig, FakeLlm};

fn project_of(files: &[BundleFile]) -> Project {
    Project::load(
        files
            .iter()
            .map(|f| SourceFile::new(f.path.clone(), f.text.clone()))
            .collect(),
    )
    .expect("the deployed bundle loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_bundle_is_cached_refreshed_and_served_while_the_server_is_down() {
    let fake = FakeLlm::start(FakeConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache/prod.json");
    let (store, server, url) =
        support::start(&dir.path().join("s.db"), support::config(None, 1)).await;
    let client = support::deployed(&store, &url, &fake).await;
    let v1 = client.envs().await.unwrap()[0].bundle_id.clone();

    let deployed = Arc::new(
        Deployed::open(client.clone(), "prod", &cache)
            .await
            .unwrap(),
    );
    assert_eq!(deployed.current().id, v1);
    assert!(cache.exists());
    assert!(
        project_of(&deployed.current().files)
            .flows
            .contains_key("pipe")
    );
    assert!(!deployed.refresh().await.unwrap(), "nothing new");

    // A new deployment is picked up by the background refresh.
    let refresher = deployed.clone().refresh_every(Duration::from_millis(50));
    let mut files = support::bundle(&fake);
    files.push(BundleFile {
        path: "prompts/extra.yaml".into(),
        text: "messages:\n  - user: hi\n".into(),
    });
    let v2 = client.upload_bundle(&files).await.unwrap().id;
    client.deploy("prod", &v2).await.unwrap();
    for _ in 0..400 {
        if deployed.current().id == v2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(deployed.current().id, v2);
    assert!(
        project_of(&deployed.current().files)
            .prompts
            .contains_key("extra")
    );
    refresher.abort();

    // The server stops: refreshing fails, the last good bundle is still served.
    server.shutdown().await;
    assert!(deployed.refresh().await.is_err());
    assert_eq!(deployed.current().id, v2);
    assert!(deployed.last_error().is_some());

    // An app starting during the outage starts from the cache…
    let restarted = Deployed::open(client.clone(), "prod", &cache)
        .await
        .unwrap();
    assert_eq!(restarted.current().id, v2);
    assert!(restarted.last_error().is_some());
    // …and without a cache it cannot start at all.
    let none = Deployed::open(client, "prod", dir.path().join("missing.json")).await;
    assert!(none.is_err());
}
