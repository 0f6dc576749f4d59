use object_store::{ObjectStoreExt, PutPayload};
#[tokio::main]
async fn main() {
    let loc = ecamp_store::Location::parse("s3://ecamp-test/x1").unwrap();
    let r = loc
        .store()
        .put(&loc.path("a"), PutPayload::from(vec![1u8]))
        .await;
    if let Err(e) = r {
        let mut s: Option<&dyn std::error::Error> = Some(&e);
        while let Some(x) = s {
            println!("{x:?}");
            s = x.source();
        }
    }
}
