//! HTTP failures classified against a real local HTTP server: error statuses by class with
//! `Retry-After` honoured, refused connections and timeouts as transient.

use std::time::Duration;

use steadfast::fault::{AgentError, Classify, Fault};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves each connection with `response` after `delay`.
async fn server(response: &'static str, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

async fn get(url: &str) -> Result<reqwest::Response, AgentError> {
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let response = client.get(url).send().await?;
    steadfast::http_fault::check(response)
}

#[tokio::test]
async fn error_statuses_are_classified_with_retry_after() {
    let url = server(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
        Duration::ZERO,
    )
    .await;
    let err = get(&url).await.unwrap_err();
    assert_eq!(err.fault(), Fault::Transient);
    assert_eq!(err.retry_after_delay(), Some(Duration::from_secs(7)));
    assert!(
        err.to_string().starts_with("HTTP 503 Service Unavailable from http://127.0.0.1:"),
        "{err}"
    );

    let url =
        server("HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n", Duration::ZERO).await;
    assert_eq!(get(&url).await.unwrap_err().fault(), Fault::Transient);

    let url = server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", Duration::ZERO).await;
    let err = get(&url).await.unwrap_err();
    assert_eq!((err.fault(), err.retry_after_delay()), (Fault::Permanent, None));

    let url = server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Duration::ZERO).await;
    assert_eq!(get(&url).await.unwrap().text().await.unwrap(), "ok");
}

#[tokio::test]
async fn refused_connections_and_timeouts_are_transient() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let err = get(&format!("http://127.0.0.1:{port}/")).await.unwrap_err();
    assert_eq!(err.fault(), Fault::Transient, "{err}");

    let url = server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Duration::from_secs(5)).await;
    let err = get(&url).await.unwrap_err();
    assert_eq!(err.fault(), Fault::Transient, "{err}");

    let client = reqwest::Client::new();
    let err = client.get("not a url").send().await.unwrap_err();
    assert_eq!(err.fault(), Fault::Permanent, "{err}");
}
