-- ramtorch/linalg.lua: the torch.linalg namespace (loaded on first use as torch.linalg). Only
-- vector_norm so far, a composition defined in ramtorch/ops_reduce.lua beside torch.norm.
return {
  vector_norm = require("ramtorch.ops_reduce").linalg.vector_norm,
}
