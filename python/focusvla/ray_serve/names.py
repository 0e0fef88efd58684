"""The deployments' names (a Serve config file's `deployments` section refers to them)."""

POLICY_DEPLOYMENT = "FocusVLAPolicy"
INGRESS_DEPLOYMENT = "FocusVLAIngress"
