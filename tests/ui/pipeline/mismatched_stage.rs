use async_trait::async_trait;
use steadfast::pipeline::Pipeline;
use steadfast::prelude::*;

struct Fetch;
struct Count;

#[async_trait]
impl Agent for Fetch {
    type Input = String;
    type Output = Vec<String>;
    fn name(&self) -> &str {
        "fetch"
    }
    async fn run(&self, _: &mut Context, url: String) -> Result<Outcome<Vec<String>>, AgentError> {
        Ok(Outcome::Done(vec![url]))
    }
}

#[async_trait]
impl Agent for Count {
    type Input = u64;
    type Output = u64;
    fn name(&self) -> &str {
        "count"
    }
    async fn run(&self, _: &mut Context, n: u64) -> Result<Outcome<u64>, AgentError> {
        Ok(Outcome::Done(n))
    }
}

fn main() {
    // `Count` takes a number, but `Fetch` hands on a list of strings: this does not compile.
    let _ = Pipeline::new("broken").then(Fetch).then(Count);
}
