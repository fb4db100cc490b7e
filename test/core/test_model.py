"""The U-Net: Diffusion Policy's architecture, parameter names and the FiLM hoist."""
import pytest
import torch

from paradigms_policy.model import ConditionalUnet1D


def test_parameter_count_of_the_original_pusht_lowdim_unet():
    model = ConditionalUnet1D(input_dim=2, global_cond_dim=40, diffusion_step_embed_dim=256,
                              down_dims=(256, 512, 1024), kernel_size=5, n_groups=8, cond_predict_scale=True)
    assert sum(p.numel() for p in model.parameters()) == 65_783_298


def test_state_dict_uses_diffusion_policy_names_and_shapes(model):
    """Names and shapes as Diffusion Policy's ConditionalUnet1D (down_dims 16, 32; step embedding 16;
    condition 16 + 40; FiLM scale and bias), so its checkpoints load by name."""
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    expected = {
        "diffusion_step_encoder.1.weight": (64, 16), "diffusion_step_encoder.3.bias": (16,),
        "down_modules.0.0.blocks.0.block.0.weight": (16, 2, 5), "down_modules.0.0.blocks.1.block.1.bias": (16,),
        "down_modules.0.0.cond_encoder.1.weight": (32, 56), "down_modules.0.0.residual_conv.weight": (16, 2, 1),
        "down_modules.0.2.conv.weight": (16, 16, 3), "mid_modules.1.cond_encoder.1.bias": (64,),
        "up_modules.0.0.residual_conv.weight": (16, 64, 1), "up_modules.0.2.conv.weight": (16, 16, 4),
        "final_conv.0.block.0.weight": (16, 16, 5), "final_conv.1.weight": (2, 16, 1),
    }
    assert {name: shapes.get(name) for name in expected} == expected
    assert len(shapes) == 100


def reference_forward(model: ConditionalUnet1D, sample, timestep, global_cond):
    """Diffusion Policy's formulation: every block applies Linear(Mish([e(t), c])) itself."""
    t = torch.as_tensor(timestep).expand(sample.shape[0])
    condition = torch.cat([model.diffusion_step_encoder(t), global_cond], dim=-1)

    def block_forward(block, x):
        out = block.blocks[0](x)
        embed = block.cond_encoder(condition).unsqueeze(-1)
        if block.cond_predict_scale:
            scale, bias = embed[:, : block.out_channels], embed[:, block.out_channels:]
            out = scale * out + bias
        else:
            out = out + embed
        return block.blocks[1](out) + block.residual_conv(x)

    x = sample.transpose(1, 2)
    skips = []
    for first, second, downsample in model.down_modules:
        x = block_forward(second, block_forward(first, x))
        skips.append(x)
        x = downsample(x)
    for block in model.mid_modules:
        x = block_forward(block, x)
    for first, second, upsample in model.up_modules:
        x = torch.cat((x, skips.pop()), dim=1)
        x = upsample(block_forward(second, block_forward(first, x)))
    return model.final_conv(x).transpose(1, 2)


def test_film_hoist_changes_nothing():
    for predict_scale in (True, False):
        model = ConditionalUnet1D(2, 40, 16, (16, 32, 64), 5, 8, predict_scale).eval()
        torch.manual_seed(1)
        sample, cond = torch.randn(4, 16, 2), torch.randn(4, 40)
        with torch.no_grad():
            for timestep in (0, 37, torch.tensor([3, 50, 99, 7])):
                hoisted = model(sample, timestep, cond)
                reference = reference_forward(model, sample, timestep, cond)
                torch.testing.assert_close(hoisted, reference, rtol=1e-5, atol=1e-6)


def test_condition_is_encoded_once_and_shared_by_stacked_slots(model):
    torch.manual_seed(2)
    cond = torch.randn(3, 40)
    samples = torch.randn(2, 3, 16, 2)
    timesteps = torch.tensor([10, 60])
    with torch.no_grad():
        encoded = model.encode_condition(cond)
        stacked = model.denoise(samples.reshape(6, 16, 2), timesteps.repeat_interleave(3), encoded).reshape(2, 3, 16, 2)
        for slot in range(2):
            torch.testing.assert_close(stacked[slot], model(samples[slot], timesteps[slot], cond), rtol=1e-5, atol=1e-6)


def test_condition_shape_is_checked(model):
    with pytest.raises(ValueError, match=r"\(B, 40\)"):
        model.encode_condition(torch.randn(2, 39))
