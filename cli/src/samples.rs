//! The sample items bundled into the binary for `steadfast demo` (from `demo/items/`; the
//! test below keeps this list and the folder in step).

/// Each sample item: its file name and bytes.
pub(crate) const SAMPLES: &[(&str, &[u8])] = &[
    ("01-openssl-advisory.md", include_bytes!("../../demo/items/01-openssl-advisory.md")),
    ("02-api-outage-postmortem.md", include_bytes!("../../demo/items/02-api-outage-postmortem.md")),
    ("03-postgres-18-release.md", include_bytes!("../../demo/items/03-postgres-18-release.md")),
    ("04-rust-1-96.md", include_bytes!("../../demo/items/04-rust-1-96.md")),
    ("05-vector-db-benchmark.md", include_bytes!("../../demo/items/05-vector-db-benchmark.md")),
    ("06-rustconf-cfp.md", include_bytes!("../../demo/items/06-rustconf-cfp.md")),
    ("07-npm-supply-chain.md", include_bytes!("../../demo/items/07-npm-supply-chain.md")),
    ("08-cdn-degraded.md", include_bytes!("../../demo/items/08-cdn-degraded.md")),
    ("09-kubernetes-1-35.md", include_bytes!("../../demo/items/09-kubernetes-1-35.md")),
    ("10-llm-eval-survey.md", include_bytes!("../../demo/items/10-llm-eval-survey.md")),
    ("11-hiring-sre.md", include_bytes!("../../demo/items/11-hiring-sre.md")),
    ("12-ssh-agent-forwarding.md", include_bytes!("../../demo/items/12-ssh-agent-forwarding.md")),
    (
        "13-queue-backlog-incident.md",
        include_bytes!("../../demo/items/13-queue-backlog-incident.md"),
    ),
    ("14-sled-store-paper.md", include_bytes!("../../demo/items/14-sled-store-paper.md")),
    ("15-meetup-berlin.md", include_bytes!("../../demo/items/15-meetup-berlin.md")),
    ("16-python-3-15-beta.md", include_bytes!("../../demo/items/16-python-3-15-beta.md")),
    ("17-ransomware-hospital.md", include_bytes!("../../demo/items/17-ransomware-hospital.md")),
    ("18-dns-outage.md", include_bytes!("../../demo/items/18-dns-outage.md")),
    ("19-contributors-summit.md", include_bytes!("../../demo/items/19-contributors-summit.md")),
    ("20-redis-8-2.md", include_bytes!("../../demo/items/20-redis-8-2.md")),
    ("21-xss-in-admin.txt", include_bytes!("../../demo/items/21-xss-in-admin.txt")),
    ("22-payment-latency.txt", include_bytes!("../../demo/items/22-payment-latency.txt")),
    ("23-grafana-release.txt", include_bytes!("../../demo/items/23-grafana-release.txt")),
    ("24-cache-study.txt", include_bytes!("../../demo/items/24-cache-study.txt")),
    ("25-workshop-testing.txt", include_bytes!("../../demo/items/25-workshop-testing.txt")),
    ("26-lunch-menu.txt", include_bytes!("../../demo/items/26-lunch-menu.txt")),
    ("27-office-plants.txt", include_bytes!("../../demo/items/27-office-plants.txt")),
    ("28-tls-cert-expiry.txt", include_bytes!("../../demo/items/28-tls-cert-expiry.txt")),
    ("30-feed-export.json", include_bytes!("../../demo/items/30-feed-export.json")),
    ("31-broken-export.json", include_bytes!("../../demo/items/31-broken-export.json")),
    ("32-wrong-shape.json", include_bytes!("../../demo/items/32-wrong-shape.json")),
    ("33-blank-item.json", include_bytes!("../../demo/items/33-blank-item.json")),
    (
        "34-postgres-18-release-copy.md",
        include_bytes!("../../demo/items/34-postgres-18-release-copy.md"),
    ),
    ("35-scanned-attachment.txt", include_bytes!("../../demo/items/35-scanned-attachment.txt")),
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_of_the_folder_is_bundled() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../demo/items");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let bundled: Vec<&str> = super::SAMPLES.iter().map(|(name, _)| *name).collect();
        assert_eq!(files, bundled, "regenerate cli/src/samples.rs");
    }
}
