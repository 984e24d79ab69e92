"""The 3D preview stack, apart from the speech core: avatars, glTF, a software rasterizer, MP4 previews.

    avatar/   the built-in reference avatar and loading the user's .vrm/.glb (`talkmotion avatar`)
    gltf.py   reading and writing glTF 2.0 / GLB (also what the .glb and .vrma sinks write)
    raster.py a small numpy triangle rasterizer
    render.py `talkmotion render`: an MP4 preview of frames on an avatar, with the audio
"""
