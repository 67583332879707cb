//! The in-process mesh passes the behaviour suite every mesh must pass.

swarm_mesh::mesh_behaviour_suite!(async { swarm_mesh::InProcMesh::new() }, "inproc");

#[tokio::test]
async fn undecodable_entries_are_delivered_as_data() {
    use swarm_mesh::prelude::*;
    use swarm_mesh::{InProcMesh, StartAt};
    let mesh = InProcMesh::new();
    mesh.create_group("s", "g", StartAt::Beginning)
        .await
        .expect("group");
    mesh.publish_undecodable("s", "{not json");
    let got = mesh
        .read("s", "g", "c", 10, std::time::Duration::from_millis(1))
        .await
        .expect("read");
    let bad = got[0].body.as_ref().expect_err("undecodable");
    assert_eq!(bad.raw, "{not json");
    assert!(!bad.error.is_empty());
}
