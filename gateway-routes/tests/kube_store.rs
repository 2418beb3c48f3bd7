//! The Gateway API store against testkit's fake API server: a start that cannot work stops with
//! what to do.

use gateway_routes::{GatewayKubeStore, GatewayTranslation};
use kube_routes::Error;
use kube_routes::KubeMetrics;
use testkit::fake_kube::{Answer, FailureRule, FakeKube};

async fn start(fake: &FakeKube) -> Result<GatewayKubeStore, Error> {
    let client = kube::Client::try_from(fake.kubeconfig("hub")).unwrap();
    let translation = GatewayTranslation { namespace: "hub".to_owned(), ..GatewayTranslation::default() };
    GatewayKubeStore::start(client, &translation, KubeMetrics::default()).await
}

#[tokio::test]
async fn missing_crds_or_permissions_stop_the_start_with_what_to_do() {
    let fake = FakeKube::start().await;
    fake.fail_next(FailureRule::new(Answer::NotServed).path_contains("httproutes"));
    let error = start(&fake).await.unwrap_err();
    assert!(matches!(error, Error::NotInstalled { .. }), "{error:?}");
    let said = error.to_string();
    assert!(
        said.contains("install the Gateway API's standard CRDs (gateway.networking.k8s.io v1)"),
        "{said}"
    );

    fake.fail_next(FailureRule::new(Answer::status(403, "Forbidden")).path_contains("httproutes"));
    let error = start(&fake).await.unwrap_err();
    assert!(error.to_string().contains("needs 'list' on httproutes.gateway.networking.k8s.io"), "{error}");

    assert!(start(&fake).await.is_ok(), "served and allowed, it starts");
}
