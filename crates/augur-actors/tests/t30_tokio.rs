//! The handle from a server's multi-threaded tokio runtime: every call from spawned tasks.

mod common;

use augur_actors::ActorsConfig;
use common::{config, id, sample, start, MODEL_VERSION};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usable_from_spawned_tasks_of_a_multi_thread_runtime() {
    let sys = start(ActorsConfig {
        auto_register: true,
        ..config(2)
    });
    let mut tasks = Vec::new();
    for task in 0..4 {
        let sys = sys.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0;
            for t in 0..5i64 {
                let batch = (0..25)
                    .map(|i| sample(&id(&format!("t{task}-c{i}")), "cpu", t * 1000, 0.5))
                    .collect();
                accepted += sys.ingest(batch).await.unwrap().accepted;
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert_eq!(accepted, 4 * 5 * 25);

    let ticker = sys.clone();
    let report = tokio::spawn(async move { ticker.tick().await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.batch_size, report.scored), (100, 100));

    let reader = sys.clone();
    let f = tokio::spawn(async move { reader.forecast(&id("t3-c24")).await })
        .await
        .unwrap();
    assert_eq!(&*f.unwrap().unwrap().model_version, MODEL_VERSION);
    let listed = tokio::spawn({
        let sys = sys.clone();
        async move { sys.list_at_risk(5, 0.0).await }
    });
    assert_eq!(listed.await.unwrap().unwrap().len(), 5);
    sys.shutdown();
}

#[test]
fn usable_without_any_runtime_on_the_calling_thread() {
    let sys = start(ActorsConfig {
        auto_register: true,
        ..config(1)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let s = rt
        .block_on(sys.ingest(vec![sample(&id("a"), "cpu", 1, 1.0)]))
        .unwrap();
    assert_eq!(s.accepted, 1);
    assert_eq!(futures::executor::block_on(sys.tick()).unwrap().scored, 1);
}
